"""Gossip Distillation (Moriwaki & Shudo): serverless pull gossip of inference lists."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from tqdm.auto import tqdm

from flower_gd.codecs import (PAYLOAD_KEY, PAYLOAD_META_KEY, InferencePayload, PayloadError,
                              decode_payload, encode_payload, payload_keys)
from flower_gd.distill import hard_labels, mix_inference_lists
from flower_gd.metering import RELAY_CONFIG_KEY, RELAY_FROM_KEY, set_meter_round
from flower_gd.node import Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import NodeRecordingStrategy
from flower_gd.training import train_hard

# Message types (Flower: "<category>.<action>").
LOCAL = "train.local"
SHARE = "query.inference"
GOSSIP = "train.gossip"
# Config key of a share request: how many nodes pull this payload in the round.
PULLERS_KEY = "pullers"


# ======================================================================== node side
def local_phase(node: Node) -> dict[str, float]:
    """Step 1: train M_i on PD_i, infer X_c into IL_i, set C_i = 1."""
    with Timer() as t:
        model, loss = node.fit_private()
        scores = node.scores(model)
        node.store.save_model(model)
        node.store.save_array("inference-list", scores)
        node.store.save_meta({"counter": 1, "round": 0})
    return {"partition-id": node.partition_id,
            "num-examples": len(node.data.parts[node.partition_id]), "train-loss": loss,
            "label-accuracy": _label_accuracy(node, hard_labels(scores)), "wall-s": t.seconds}


def share(node: Node) -> RecordDict:
    """Answer a pull: the node's current (IL_i, C_i)."""
    meta = node.store.load_meta()
    payload = InferencePayload(node.store.load_array("inference-list"), int(meta["counter"]),
                               node.cfg.inference_output)
    return encode_payload(payload, node.codec)


def gossip_step(node: Node, content: RecordDict, server_round: int) -> dict[str, float]:
    """Steps 2.3-2.5 on a pulled (IL_j, C_j): mix (Eq. 1), label, train one epoch, re-infer.

    A payload that fails validation raises PayloadError before any state changes.
    """
    with Timer() as t:
        il_own = node.store.load_array("inference-list")
        meta = node.store.load_meta()
        peer = decode_payload(content, expected_shape=il_own.shape)  # payload 0: one peer
        if peer.kind != node.cfg.inference_output:
            raise PayloadError(f"peer sent {peer.kind}, this run mixes "
                               f"{node.cfg.inference_output}")
        mixed = mix_inference_lists(il_own, int(meta["counter"]), peer.scores, peer.counter)
        labels = hard_labels(mixed)
        label_acc = _label_accuracy(node, labels)
        if node.cfg.label_source == "ground-truth":
            # LABEL LEAK, on purpose: what the reference code's dist_train does.
            labels = node.data.common_y
        model = node.load_model()
        loss = train_hard(model, node.data.common_x, labels, node.cfg.round_epochs,
                          node.optim, node.seed(server_round))
        scores = node.scores(model)
        node.store.save_model(model)
        node.store.save_array("inference-list", scores)
        node.store.save_meta({"counter": int(meta["counter"]) + 1, "round": server_round})
    return {"train-loss": loss, "label-accuracy": label_acc,
            "counter": int(meta["counter"]) + 1, "wall-s": t.seconds}


def _label_accuracy(node: Node, labels: np.ndarray) -> float:
    """Share of X_c whose pseudo-label equals the truth (a diagnostic, never trained on)."""
    return float((labels == node.data.common_y).mean())


# ======================================================================== relay side
class GossipDistillation(NodeRecordingStrategy):
    peers_per_round = 1  # the paper pulls from one peer per round

    r"""Gossip Distillation, with the ServerApp as a relay only.

    Moriwaki & Shudo, "Gossip Distillation: Decentralized Deep Learning Transmitting
    neither Training Data nor Models". Every node i trains M_i on its private data, infers
    the common data X_c into an inference list IL_i and sets C_i = 1. Then, each round,
    every node pulls (IL_j, C_j) from a random peer j != i, mixes (paper Eq. 1)

    .. math:: L_{mix} = \frac{IL_j C_j + IL_i C_i}{C_j + C_i},

    trains M_i for `round-epochs` on (X_c, argmax L_mix), re-infers X_c into IL_i and
    increments C_i.

    Flower has no node-to-node channel, so this strategy runs on the ServerApp purely as a
    relay: it picks who pulls from whom, asks the peer for its payload (`query.inference`)
    and forwards it unchanged (`train.gossip`). It never aggregates, never stores a model
    or an inference list beyond the round in which it forwards it. Rounds are synchronous:
    all pulls of round r see the peers' lists as they were at the start of round r.

    Messages a node must honour (ConfigRecord "config" keys):

    - ``train.local``: ``run-dir``; reply metrics ``partition-id``, ``num-examples``.
    - ``query.inference``: ``run-dir``; reply records ``inference`` / ``inference-meta``.
    - ``train.gossip``: ``run-dir``, ``server-round``, the peer's payload records and a
      ConfigRecord ``relay`` with ``relay-from`` (the peer), which the meter uses to count
      the payload once as peer-to-peer bytes.
    - ``evaluate``: ``run-dir``; reply metrics ``accuracy``, ``loss`` on the test set.

    Parameters
    ----------
    run_dir : str
        Directory of this run; nodes keep their state under ``<run-dir>/nodes``.
    num_nodes : int
        Size of the fleet; the run starts once that many nodes are connected.
    topology : str
        ``complete`` (any peer) or ``ring`` (one of the two neighbours by partition id).
    seed : int
        Seeds the choice of peers.
    recorder : RunRecorder | None
        Receives per-node metrics; writes the run directory.
    label_leak : bool
        Only for the log: nodes train on the common data's true labels.
    """

    def __init__(self, run_dir: str, num_nodes: int, topology: str = "complete", seed: int = 0,
                 recorder: RunRecorder | None = None, label_leak: bool = False) -> None:
        if topology not in ("complete", "ring"):
            raise ValueError(f"topology={topology!r}: choose complete or ring")
        super().__init__(run_dir, num_nodes, recorder)
        self.topology = topology
        self.rng = np.random.default_rng(seed)
        self.label_leak = label_leak
        self._relay: dict[int, list[tuple[int, Message]]] = {}  # dst -> [(src, share reply)]
        self.failed_pulls = 0

    def summary(self) -> None:
        log(INFO, "\t├── %s: relay-only ServerApp, topology=%s", type(self).__name__,
            self.topology)
        if self.label_leak:
            log(WARNING, "\t└── label-source=ground-truth: LABEL LEAK (reference-code behaviour)")

    # --- the local phase ------------------------------------------------------------------
    def local_phase(self, grid: Grid, timeout: float) -> MetricRecord:
        """Round 0: every node trains on its private data and infers X_c; then evaluates."""
        replies = grid.send_and_receive([self.message(n, LOCAL, 0) for n in self.node_ids],
                                        timeout=timeout)
        got = self.collect(0, replies, "local phase")
        self.require_all(got, "the local phase")
        for node, reply in got.items():
            self.register(node, int(reply.content["metrics"]["partition-id"]))
        return self.evaluate_round(grid, 0, timeout)

    # --- one gossip round -----------------------------------------------------------------
    def choose_peers(self, node_ids: list[int], k: int = 1) -> dict[int, list[int]]:
        """Pick, for every node, the k distinct peers it pulls from this round (pull gossip)."""
        pulls = {}
        by_partition = sorted(node_ids, key=lambda n: self.partition_of.get(n, n))
        for pos, node in enumerate(by_partition):
            if self.topology == "ring":
                candidates = [by_partition[(pos - 1) % len(by_partition)],
                              by_partition[(pos + 1) % len(by_partition)]]
                candidates = list(dict.fromkeys(c for c in candidates if c != node))
            else:
                candidates = [n for n in by_partition if n != node]
            if k == 1:  # the paper's single pull (and the same random stream as before)
                chosen = [self.rng.integers(len(candidates))]
            else:
                chosen = self.rng.choice(len(candidates), size=min(k, len(candidates)),
                                         replace=False)
            pulls[node] = [int(candidates[i]) for i in chosen]
        return pulls

    def configure_query(self, server_round: int, pulls: dict[int, list[int]]) -> list[Message]:
        """Ask each chosen peer for its current payload, telling it how many nodes pull it."""
        pullers: dict[int, int] = {}
        for sources in pulls.values():
            for src in sources:
                pullers[src] = pullers.get(src, 0) + 1
        messages = []
        for src in sorted(pullers):
            message = self.message(src, SHARE, server_round)
            message.content["config"][PULLERS_KEY] = pullers[src]
            messages.append(message)
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Forward each pulled payload, unchanged, to the node that pulled it."""
        messages = []
        for dst, relayed in sorted(self._relay.items()):
            content = RecordDict()
            for i, (src, reply) in enumerate(relayed):
                key, meta_key = payload_keys(i)
                content[key] = reply.content.array_records[PAYLOAD_KEY]
                content[meta_key] = reply.content.config_records[PAYLOAD_META_KEY]
            content[RELAY_CONFIG_KEY] = ConfigRecord({RELAY_FROM_KEY: [s for s, _ in relayed]})
            messages.append(self.message(dst, GOSSIP, server_round, content))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record each node's step metrics; there is no global model to aggregate."""
        got = self.collect(server_round, replies, "gossip step")
        if not got:
            return None, None
        metrics = [m.content["metrics"] for m in got.values()]
        return None, MetricRecord({
            "nodes-updated": len(got),
            "payloads-rejected": sum(float(m.get("payload-rejected", 0.0)) for m in metrics),
            "median-label-accuracy": statistics.median(
                float(m.get("label-accuracy", 0.0)) for m in metrics)})

    def gossip_round(self, grid: Grid, server_round: int, timeout: float
                     ) -> MetricRecord | None:
        """Pull from chosen peers, relay their payloads, let every puller train."""
        pulls = self.choose_peers(self.node_ids, self.peers_per_round)
        shares = grid.send_and_receive(self.configure_query(server_round, pulls),
                                       timeout=timeout)
        by_source = {m.metadata.src_node_id: m for m in shares if not m.has_error()}
        self._relay = {}
        failed = 0
        for dst, sources in pulls.items():
            answered = [(src, by_source[src]) for src in sources if src in by_source]
            failed += len(sources) - len(answered)
            if answered:
                self._relay[dst] = answered
        if failed:
            self.failed_pulls += failed
            log(WARNING, "round %s: %s pull(s) skipped, their peers did not answer; "
                "nodes with no answer keep their state", server_round, failed)
        replies = grid.send_and_receive(
            self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid),
            timeout=timeout)
        self._relay = {}  # relay only: forwarded payloads are not kept
        return self.aggregate_train(server_round, replies)[1]

    # --- the run ------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Local phase, then `num_rounds` synchronous gossip rounds; nodes evaluate each round.

        `initial_arrays` and `evaluate_fn` are unused: there is no global model.
        """
        self.summary()
        result = Result()
        self.connect(grid, timeout)
        set_meter_round(grid, 0)
        result.evaluate_metrics_clientapp[0] = self.local_phase(grid, timeout)
        bar = tqdm(range(1, num_rounds + 1), desc=type(self).__name__, unit="round",
                   leave=False)
        for server_round in bar:
            set_meter_round(grid, server_round)
            train_metrics = self.gossip_round(grid, server_round, timeout)
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            evaluated = self.evaluate_round(grid, server_round, timeout)
            result.evaluate_metrics_clientapp[server_round] = evaluated
            bar.set_postfix(median_acc=f"{evaluated.get('median-accuracy', float('nan')):.3f}")
        return result
