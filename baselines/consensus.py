"""Server-aggregated score sharing on a per-round public subset: the plumbing FedMD and DS-FL
share (each method's own file holds its aggregation and what a node learns from it).

One run: round 0 is every node's local phase (the shared one: a model trained on its private
data). Each later round r:

1. ``query.scores``: every node sends the scores of its current model on this round's public
   subset S_r of the common data X_c (`public_subset`: drawn afresh from the run's seed and r,
   so both sides know it and no index list travels);
2. the server aggregates the valid uploads into one target per sample of S_r;
3. ``train.digest``: every node receives the target, learns from it on S_r (the method's
   `digest`) and then trains `revisit-epochs` on its private data;
4. every node evaluates its own model.

Everything that moves is an inference list (metered as ``scores``); no weights and no data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from tqdm.auto import tqdm

from flower_gd.codecs import (
    Codec,
    Expect,
    InferencePayload,
    decode_payload,
    encode_payload,
)
from flower_gd.config import RunConfig
from flower_gd.distill import round_subset
from flower_gd.metering import set_meter_round
from flower_gd.method import NodeStep, ServerRun
from flower_gd.node import Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import EVALUATE, NodeRecordingStrategy, evaluate, partition_of_reply
from flower_gd.training import infer, softmax, train_hard

LOCAL = "train.local"  # round 0: the local phase
QUERY = "query.scores"  # the node's scores on this round's public subset
DIGEST = "train.digest"  # the server's target on that subset: learn from it, then revisit
# Run-config keys every method on this plumbing reads.
CONSENSUS_KEYS = frozenset({"local-epochs", "num-server-rounds", "public-per-round",
                            "digest-epochs", "revisit-epochs", "codec", "codec-topk"})

# What a method learns from the target on S_r: (node, model, x of S_r, target) -> loss.
Digest = Callable[[Node, torch.nn.Module, np.ndarray, np.ndarray], float]


# ======================================================================== node side
def local_phase(node: Node, content: RecordDict | None = None) -> dict[str, float]:
    """Round 0: the shared local phase (a model trained on PD_i), kept as round 0's state."""
    with Timer() as t:
        model, loss = node.fit_private()
        node.store.commit(0, model)
    return node.local_phase_metrics(loss, t.seconds)


def scores_step(kind: str) -> NodeStep:
    """The node's answer to ``query.scores``: its model's `kind` ("logits" or "probs") on
    S_r, as of the end of the previous round (a Byzantine node sends a corrupted list)."""
    def answer(node: Node, content: RecordDict) -> RecordDict:
        model = node.base_snapshot().load_model(node.new_model())
        idx = round_subset(node.cfg, len(node.data.common_x), node.current_round)
        logits = infer(model, node.data.common_x[idx])
        scores = logits if kind == "logits" else softmax(logits)
        reply = encode_payload(InferencePayload(node.outgoing_scores(scores, kind),
                                                node.current_round, kind),
                               node.outgoing_codec)
        # the step's own time is the digest's `wall-s`; every message's is in busy.csv
        reply["metrics"] = MetricRecord({"partition-id": float(node.partition_id)})
        return reply
    return answer


def digest_step(kind: str, digest: Digest) -> NodeStep:
    """The node's answer to ``train.digest``: decode the server's target on S_r (refused
    before any state changes if it is malformed), `digest` it, then train `revisit-epochs`
    on the private data; the model becomes this round's state."""
    def step(node: Node, content: RecordDict) -> dict[str, float]:
        with Timer() as t:
            r = node.current_round
            idx = round_subset(node.cfg, len(node.data.common_x), r)
            target = decode_payload(content, (len(idx), node.data.dataset.num_classes),
                                    expect=Expect(kind=kind)).scores
            model = node.base_snapshot().load_model(node.new_model())
            digest_loss = digest(node, model, node.data.common_x[idx], target)
            revisit_loss = float("nan")
            if node.cfg.revisit_epochs:
                x, y = node.data.private(node.partition_id)
                revisit_loss = train_hard(model, x, y, node.cfg.revisit_epochs, node.optim,
                                          node.seed(r))
            node.store.commit(r, model)
        return {"digest-loss": digest_loss, "train-loss": revisit_loss,
                "label-accuracy": node.label_accuracy(target.argmax(axis=1), idx),
                "wall-s": t.seconds}
    return step


def node_steps(kind: str, digest: Digest) -> dict[str, NodeStep]:
    return {LOCAL: local_phase, QUERY: scores_step(kind), DIGEST: digest_step(kind, digest),
            EVALUATE: evaluate}


# ======================================================================== server side
class ConsensusServer(NodeRecordingStrategy):
    """The server of a score-sharing method: query, aggregate, send the target back.

    Subclasses set `kind` (what nodes upload and what the target is: "logits" or "probs")
    and implement `aggregate` (the valid uploads, stacked (nodes, |S_r|, C), to the target
    (|S_r|, C)). Uploads that fail validation are left out (logged); a round needs
    `min-nodes` valid uploads. A lost or failed message is not re-sent (as for DLAD and
    FedAvg; the relay methods retry), and a killed run restarts from round 0 (its nodes'
    local phase clears the earlier attempt's snapshots). Messages a node must honour:
    ``train.local``, ``query.scores`` and ``train.digest`` (ConfigRecord "config":
    ``run-dir``, ``server-round``; payload record ``inference``),
    ``evaluate``.
    """

    kind = "probs"
    label = "consensus"

    def __init__(self, run_dir: str, num_nodes: int, cfg: RunConfig, num_common: int,
                 num_classes: int, recorder: RunRecorder | None = None) -> None:
        super().__init__(run_dir, num_nodes, recorder, min_nodes=cfg.min_nodes)
        self.cfg = cfg
        self.num_common = num_common
        self.num_classes = num_classes
        self.codec = Codec(cfg.codec, cfg.codec_topk)

    def aggregate(self, scores: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def summary(self) -> None:
        log(INFO, "\t├── %s: %s rounds, %s public samples per round, digest %s epoch(s), "
            "revisit %s epoch(s)", self.label, self.cfg.num_server_rounds,
            len(round_subset(self.cfg, self.num_common, 1)), self.cfg.digest_epochs,
            self.cfg.revisit_epochs)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return [self.message(n, QUERY, server_round) for n in self.node_ids]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise NotImplementedError("the target goes back to the nodes: see `target`")

    def target(self, server_round: int, replies: Iterable[Message]) -> np.ndarray:
        """The aggregate of every valid upload of this round, in partition order."""
        shape = (len(round_subset(self.cfg, self.num_common, server_round)), self.num_classes)
        valid = self.valid_uploads(server_round, replies, f"{self.label} upload", shape,
                                   Expect(kind=self.kind))
        with self.server_work():  # partition order: the sum is reproducible
            return self.aggregate(np.stack([p.scores for p in valid.values()])).astype(
                np.float32)

    def local_round(self, grid: Grid, timeout: float) -> MetricRecord:
        """Round 0; later rounds go on with the nodes that finished it (a node without a
        local model has nothing to send)."""
        set_meter_round(grid, 0)
        replies = grid.send_and_receive([self.message(n, LOCAL, 0) for n in self.node_ids],
                                        timeout=timeout)
        got = self.collect(0, replies, "local phase")
        for node, reply in got.items():
            self.register(node, partition_of_reply(reply))
        self.require_min(got, "the local phase")
        self.node_ids = sorted(got)
        return self.evaluate_round(grid, 0, timeout)

    def exchange_round(self, grid: Grid, server_round: int, timeout: float) -> MetricRecord:
        set_meter_round(grid, server_round)
        replies = grid.send_and_receive(
            self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid),
            timeout=timeout)
        target = self.target(server_round, replies)
        payload = InferencePayload(target, server_round, self.kind)
        messages = [self.message(n, DIGEST, server_round,
                                 encode_payload(payload, self.codec))
                    for n in self.node_ids]
        self.collect(server_round, grid.send_and_receive(messages, timeout=timeout),
                     f"{self.label} digest")
        return self.evaluate_round(grid, server_round, timeout)

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 1,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        self.summary()
        result = Result()
        self.connect(grid, timeout)
        result.evaluate_metrics_clientapp[0] = self.local_round(grid, timeout)
        with tqdm(range(1, num_rounds + 1), desc=self.label, unit="round") as rounds:
            for r in rounds:
                metrics = self.exchange_round(grid, r, timeout)
                result.evaluate_metrics_clientapp[r] = metrics
                if "median-accuracy" in metrics:
                    rounds.set_postfix(median_acc=f"{metrics['median-accuracy']:.3f}")
        return result


def run_server(server_class: type[ConsensusServer], server: ServerRun) -> dict[str, Any]:
    cfg = server.cfg
    data = server.server_data()
    server_class(server.run_dir, cfg.num_nodes, cfg, len(data.split.common),
                 data.dataset.num_classes, server.recorder).start(
        grid=server.grid, num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout)
    return {}
