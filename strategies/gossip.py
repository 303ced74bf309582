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

from flower_gd.byzantine import outgoing_codec, outgoing_scores
from flower_gd.codecs import (PAYLOAD_KEY, PAYLOAD_META_KEY, InferencePayload,
                              PayloadError, count_payloads, decode_payload, encode_payload,
                              payload_keys)
from flower_gd.distill import clip_toward, hard_labels, mix_inference_lists
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
# Config key: pullers of each of this node's answers delivered earlier in the round (share) or
# in the whole round (step): push-sum splits the node's weight by each.
SHARED_KEY = "shared"


# ======================================================================== node side
LIST = "inference-list"


def local_phase(node: Node) -> dict[str, float]:
    """Step 1: train M_i on PD_i, infer X_c into IL_i, set C_i = 1 (snapshot of round 0)."""
    with Timer() as t:
        model, loss = node.fit_private()
        scores = node.scores(model)
        node.store.commit(0, model, {LIST: scores}, {"counter": 1})
    return {"partition-id": node.partition_id,
            "num-examples": len(node.data.parts[node.partition_id]), "train-loss": loss,
            "label-accuracy": _label_accuracy(node, hard_labels(scores)), "wall-s": t.seconds}


def share(node: Node) -> RecordDict:
    """Answer a pull: the node's (IL_i, C_i) as of the end of the previous round.

    A Byzantine node (`byzantine-nodes`) sends a corrupted list with an honest counter.
    """
    snap = node.base_snapshot()
    scores = outgoing_scores(node, snap.array(LIST), node.cfg.inference_output)
    payload = InferencePayload(scores, int(snap.meta["counter"]), node.cfg.inference_output)
    return encode_payload(payload, outgoing_codec(node))


def decode_peers(node: Node, content: RecordDict, shape: tuple[int, ...]
                 ) -> tuple[list[InferencePayload], list[str]]:
    """Every relayed payload that passes validation, and the reasons the others failed.

    A rejected payload is logged with its reason and never touches this node's state.
    """
    peers, reasons = [], []
    for i in range(count_payloads(content)):
        key, meta_key = payload_keys(i)
        try:
            peers.append(decode_payload(content, shape, key, meta_key))
        except PayloadError as err:
            reasons.append(str(err))
            log(WARNING, "node %s rejected payload %s in round %s: %s", node.partition_id, i,
                node.server_round, err)
    return peers, reasons


def robust(node: Node, own: np.ndarray, peer: np.ndarray) -> np.ndarray:
    """`robust-mix = clip`: bound how far one peer can move each sample (self-centered
    clipping); `none`: the peer's list as sent."""
    if node.cfg.robust_mix == "clip":
        return clip_toward(own, peer, node.cfg.clip_radius)
    return peer


def gossip_step(node: Node, content: RecordDict, server_round: int) -> dict[str, float]:
    """Steps 2.3-2.5 on a pulled (IL_j, C_j): mix (Eq. 1), label, train one epoch, re-infer.

    A payload that fails validation raises PayloadError before any state changes; a message
    with no payload (every pull failed) leaves the state as it is.
    """
    with Timer() as t:
        base = node.store.snapshot(server_round - 1)
        il_own = base.array(LIST)
        counter = int(base.meta["counter"])
        peers, reasons = decode_peers(node, content, il_own.shape)
        if reasons and not peers:
            raise PayloadError("; ".join(reasons))
        if not peers:
            return {"peers": 0, "counter": counter, "wall-s": t.seconds}
        peer = peers[0]  # the paper pulls one peer
        if peer.kind != node.cfg.inference_output:
            raise PayloadError(f"peer sent {peer.kind}, this run mixes "
                               f"{node.cfg.inference_output}")
        mixed = mix_inference_lists(il_own, counter, robust(node, il_own, peer.scores),
                                    peer.counter)  # paper Eq. 1
        labels = hard_labels(mixed)
        label_acc = _label_accuracy(node, labels)
        if node.cfg.label_source == "ground-truth":
            # LABEL LEAK, on purpose: what the reference code's dist_train does.
            labels = node.data.common_y
        model = base.load_model(node.new_model())
        loss = train_hard(model, node.data.common_x, labels, node.cfg.round_epochs,
                          node.optim, node.seed(server_round))
        scores = node.scores(model)
        node.store.commit(server_round, model, {LIST: scores}, {"counter": counter + 1})
    return {"train-loss": loss, "label-accuracy": label_acc, "peers": 1,
            "payload-rejected": len(reasons), "counter": counter + 1, "wall-s": t.seconds}


def _label_accuracy(node: Node, labels: np.ndarray) -> float:
    """Share of X_c whose pseudo-label equals the truth (a diagnostic, never trained on)."""
    return float((labels == node.data.common_y).mean())


# ======================================================================== relay side
class GossipDistillation(NodeRecordingStrategy):
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
    - ``query.inference``: ``run-dir``, ``server-round``, ``pullers`` (how many nodes get
      this answer) and ``shared`` (pullers of its answers delivered earlier this round);
      reply records ``inference`` / ``inference-meta``.
    - ``train.gossip``: ``run-dir``, ``server-round``, the peers' payload records (none when
      every pull failed), ``shared`` (pullers of this node's delivered answers) and a
      ConfigRecord ``relay`` with ``relay-from`` (the peers), which the meter uses to count
      each payload once as peer-to-peer bytes.
    - ``query.status``: reply metrics ``partition-id`` and ``state-round`` (resume, and a
      node whose local-phase reply was lost).
    - ``evaluate``: ``run-dir``; reply metrics ``accuracy``, ``loss`` on the test set.

    Faults: a pull whose peer does not answer within ``pull-timeout`` (dead, slow, message
    lost) is retried on another untried peer up to ``pull-retries`` times, then skipped; the
    puller keeps its state. A step goes on while ``min-nodes`` nodes answer. After every
    round the relay writes a checkpoint (its random stream, counters), so a killed run
    resumes from its last completed round with the nodes' snapshots.

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
    pull_timeout, pull_retries, min_nodes
        Fault handling, as above.
    """

    peers_per_round = 1  # the paper pulls from one peer per round

    def __init__(self, run_dir: str, num_nodes: int, topology: str = "complete", seed: int = 0,
                 recorder: RunRecorder | None = None, label_leak: bool = False,
                 pull_timeout: float = 600.0, pull_retries: int = 1, min_nodes: int = 2) -> None:
        if topology not in ("complete", "ring"):
            raise ValueError(f"topology={topology!r}: choose complete or ring")
        super().__init__(run_dir, num_nodes, recorder, min_nodes=min_nodes)
        self.topology = topology
        self.rng = np.random.default_rng(seed)
        self.label_leak = label_leak
        self.pull_timeout = pull_timeout
        self.pull_retries = pull_retries
        self._relay: dict[int, list[tuple[int, Message]]] = {}  # dst -> [(src, share reply)]
        self._shared: dict[int, list[int]] = {}  # src -> pullers of each delivered answer
        self.failed_pulls = 0

    def summary(self) -> None:
        log(INFO, "\t├── %s: relay-only ServerApp, topology=%s", type(self).__name__,
            self.topology)
        if self.label_leak:
            log(WARNING, "\t└── label-source=ground-truth: LABEL LEAK (reference-code behaviour)")

    # --- the local phase ------------------------------------------------------------------
    def local_phase(self, grid: Grid, timeout: float) -> MetricRecord:
        """Round 0: every node trains on its private data and infers X_c; then evaluates.

        A node whose reply was lost is asked whether it holds state (it may have finished);
        nodes with no state have nothing to gossip: the run goes on without them while at
        least `min-nodes` remain.
        """
        replies = grid.send_and_receive([self.message(n, LOCAL, 0) for n in self.node_ids],
                                        timeout=timeout)
        got = self.collect(0, replies, "local phase")
        for node, reply in got.items():
            self.register(node, int(reply.content["metrics"]["partition-id"]))
        silent = sorted(set(self.node_ids) - set(got))
        found = self.with_state(grid, silent, timeout) if silent else {}
        for node, partition in found.items():
            self.register(node, partition)
        ready = {**got, **found}
        self.require_min(ready, "the local phase")
        self.node_ids = sorted(ready)
        return self.evaluate_round(grid, 0, timeout)

    # --- one gossip round -----------------------------------------------------------------
    def candidates(self, node: int, node_ids: list[int]) -> list[int]:
        """The peers `node` may pull from under the topology, in partition order."""
        by_partition = sorted(node_ids, key=lambda n: self.partition_of.get(n, n))
        if self.topology == "ring":
            pos = by_partition.index(node)
            ring = [by_partition[(pos - 1) % len(by_partition)],
                    by_partition[(pos + 1) % len(by_partition)]]
            return list(dict.fromkeys(c for c in ring if c != node))
        return [n for n in by_partition if n != node]

    def choose_peers(self, node_ids: list[int], k: int = 1) -> dict[int, list[int]]:
        """Pick, for every node, the k distinct peers it pulls from this round (pull gossip)."""
        pulls = {}
        for node in sorted(node_ids, key=lambda n: self.partition_of.get(n, n)):
            candidates = self.candidates(node, node_ids)
            if k == 1:  # the paper's single pull (and the same random stream as before)
                chosen = [self.rng.integers(len(candidates))]
            else:
                chosen = self.rng.choice(len(candidates), size=min(k, len(candidates)),
                                         replace=False)
            pulls[node] = [int(candidates[i]) for i in chosen]
        return pulls

    def configure_query(self, server_round: int, pulls: dict[int, list[int]]) -> list[Message]:
        """Ask each chosen peer for its current payload, telling it how many nodes pull it
        now and how many pulled it earlier this round (push-sum splits its weight by both)."""
        pullers: dict[int, int] = {}
        for sources in pulls.values():
            for src in sources:
                pullers[src] = pullers.get(src, 0) + 1
        messages = []
        for src in sorted(pullers):
            message = self.message(src, SHARE, server_round)
            message.content["config"][PULLERS_KEY] = pullers[src]
            if self._shared.get(src):
                message.content["config"][SHARED_KEY] = list(self._shared[src])
            messages.append(message)
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Forward each pulled payload, unchanged, to the node that pulled it. Every node gets
        a step message, with no payload when all its pulls failed, and learns how many nodes
        received its own answers (push-sum bookkeeping)."""
        messages = []
        for dst in sorted(self.node_ids, key=lambda n: self.partition_of.get(n, n)):
            relayed = self._relay.get(dst, [])
            content = RecordDict()
            for i, (src, reply) in enumerate(relayed):
                key, meta_key = payload_keys(i)
                content[key] = reply.content.array_records[PAYLOAD_KEY]
                content[meta_key] = reply.content.config_records[PAYLOAD_META_KEY]
            if relayed:
                content[RELAY_CONFIG_KEY] = ConfigRecord({RELAY_FROM_KEY: [s for s, _ in relayed]})
            message = self.message(dst, GOSSIP, server_round, content)
            if self._shared.get(dst):
                message.content["config"][SHARED_KEY] = list(self._shared[dst])
            messages.append(message)
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

    def pull(self, grid: Grid, server_round: int) -> None:
        """Pull from the chosen peers; a pull whose peer does not answer within `pull-timeout`
        (dead, slow, lost message) is retried on another untried peer, `pull-retries` times,
        then skipped. Fills the relay table and the push-sum bookkeeping."""
        want = self.choose_peers(self.node_ids, self.peers_per_round)
        tried = {dst: {dst, *srcs} for dst, srcs in want.items()}
        self._relay = {dst: [] for dst in want}
        self._shared = {}
        failed: dict[int, int] = {}
        for attempt in range(self.pull_retries + 1):
            if not any(want.values()):
                break
            queries = self.configure_query(server_round, want)
            pullers = {m.metadata.dst_node_id: int(m.content["config"][PULLERS_KEY])
                       for m in queries}
            replies = grid.send_and_receive(queries, timeout=self.pull_timeout)
            answers = self.collect(server_round, replies, "pull")
            for src in answers:
                self._shared.setdefault(src, []).append(pullers[src])
            retry: dict[int, list[int]] = {}
            for dst, srcs in want.items():
                missing = [s for s in srcs if s not in answers]
                self._relay[dst].extend((s, answers[s]) for s in srcs if s in answers)
                if not missing:
                    continue
                failed[dst] = failed.get(dst, 0) + len(missing)
                if attempt < self.pull_retries:
                    free = [c for c in self.candidates(dst, self.node_ids) if c not in tried[dst]]
                    if free:
                        picked = self.rng.choice(len(free), size=min(len(missing), len(free)),
                                                 replace=False)
                        retry[dst] = [int(free[i]) for i in picked]
                        tried[dst].update(retry[dst])
            want = retry
        if failed:
            self.failed_pulls += sum(failed.values())
            log(WARNING, "round %s: %s pull(s) failed (peer dead, slow or message lost); "
                "retried up to %s time(s) on other peers", server_round, sum(failed.values()),
                self.pull_retries)
            for dst, n in failed.items():
                if self.recorder is not None:
                    self.recorder.record(server_round, dst, {"failed-pulls": n})

    def gossip_round(self, grid: Grid, server_round: int, timeout: float
                     ) -> MetricRecord | None:
        """Pull from chosen peers, relay their payloads, let every node take its step."""
        self.pull(grid, server_round)
        replies = grid.send_and_receive(
            self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid),
            timeout=timeout)
        self._relay = {}  # relay only: forwarded payloads are not kept
        self._shared = {}
        return self.aggregate_train(server_round, replies)[1]

    # --- resume -----------------------------------------------------------------------------
    def state(self) -> dict:
        """What the relay needs to go on after a crash: its random stream and its counters."""
        return {"rng": self.rng.bit_generator.state, "failed-pulls": self.failed_pulls}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.failed_pulls = int(state["failed-pulls"])

    # --- the run ------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Local phase, then `num_rounds` synchronous gossip rounds; nodes evaluate each round.

        When the run directory holds a checkpoint (a run that was killed), the local phase
        and the completed rounds are not redone: nodes resume from their snapshots.
        `initial_arrays` and `evaluate_fn` are unused: there is no global model.
        """
        self.summary()
        result = Result()
        self.connect(grid, timeout)
        resumed = self.recorder.resumed if self.recorder is not None else None
        if resumed is not None:
            first = resumed.round + 1
            self.restore(resumed.state)
            set_meter_round(grid, first)  # the status queries count in the resumed round
            self.reattach(grid, timeout)
            log(INFO, "resuming from round %s (checkpoint of round %s)", first, resumed.round)
        else:
            first = 1
            set_meter_round(grid, 0)
            result.evaluate_metrics_clientapp[0] = self.local_phase(grid, timeout)
            self.checkpoint(0)
        bar = tqdm(range(first, num_rounds + 1), desc=type(self).__name__, unit="round",
                   leave=False)
        for server_round in bar:
            set_meter_round(grid, server_round)
            train_metrics = self.gossip_round(grid, server_round, timeout)
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            evaluated = self.evaluate_round(grid, server_round, timeout)
            result.evaluate_metrics_clientapp[server_round] = evaluated
            self.checkpoint(server_round)
            bar.set_postfix(median_acc=f"{evaluated.get('median-accuracy', float('nan')):.3f}")
        return result

    def checkpoint(self, server_round: int) -> None:
        if self.recorder is not None:
            self.recorder.checkpoint(server_round, self.state())
