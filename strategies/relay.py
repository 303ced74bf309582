"""The pull relay every serverless method runs on: peer choice, forwarding, retries, resume."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from tqdm.auto import tqdm

from flower_gd.codecs import CONFIG_KEY, PAYLOAD_KEY, payload_key, payload_record
from flower_gd.config import PEER_ASSISTS, TOPOLOGIES
from flower_gd.faults import delay_if_slow
from flower_gd.metering import RELAY_FROM_KEY, set_meter_round
from flower_gd.method import NodeStep, ServerRun
from flower_gd.models import parameter_count
from flower_gd.node import Node
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import (
    EVALUATE,
    STATUS,
    NodeRecordingStrategy,
    evaluate,
    metrics_of,
    partition_of_reply,
)

# Message types of the relay protocol (Flower: "<category>.<action>").
LOCAL = "train.local"  # the local phase: train on private data, keep a payload for peers
SHARE = "query.inference"  # a pull: answer with the payload as of the end of the last round
STEP = "train.gossip"  # the relayed peer payloads: mix them and learn
# Delivery receipts, in the config of share requests and step messages. FANOUT_KEY: how many
# nodes receive this answer. DELIVERED_KEY: the fan-out of each of the node's answers that
# reached the relay earlier in the round (share) or in the whole round (step). Methods that
# conserve a mass (gossip-adaptive's push-sum) book their splits from these; others ignore them.
FANOUT_KEY = "pullers"
DELIVERED_KEY = "shared"
# Run-config keys the relay reads (every method on it lists them among its `reads`).
RELAY_KEYS = frozenset({"topology", "pull-timeout", "pull-retries", "gossip-assist"})
# Tries to get a step through (a lost message fails 1 - (1 - p)^2 of the tries, so at loss
# p = 0.2 ten tries leave a step undelivered with probability 0.36^10 < 4e-5).
STEP_ATTEMPTS = 10


# Errors that say a message or its reply was lost on the way (the instruction, or the reply,
# expired before it was delivered): sending again may get through.
LOST_CODES = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


def _worth_retrying(reply: Message | None) -> bool:
    """A message with no reply in time, or one lost in transit (either way: LOST_CODES), is
    re-sent; not one answered, nor one whose error (a dead node, a node that raised) would
    only come back again."""
    return reply is None or (reply.has_error() and reply.error.code in LOST_CODES)


# ======================================================================== node side
def status(node: Node, content: RecordDict) -> dict[str, float]:
    """Resume: which partition this node is and the newest round it holds state for."""
    rounds = node.store.rounds()
    return {"partition-id": node.partition_id, "state-round": rounds[-1] if rounds else -1}


def delivered(content: RecordDict) -> list[int]:
    """The fan-outs of this node's answers delivered this round (the relay's receipts)."""
    config = content.config_records.get(CONFIG_KEY)
    value = [] if config is None else config.get(DELIVERED_KEY, [])
    return [int(p) for p in value] if isinstance(value, list) else [int(value)]


def fanout(content: RecordDict) -> int:
    """How many nodes receive the answer to this share request (1 if the relay says not)."""
    config = content.config_records.get(CONFIG_KEY)
    value = 1 if config is None else config.get(FANOUT_KEY, 1)
    if not isinstance(value, int):
        raise ValueError(f"{FANOUT_KEY}={value!r} is not a node count")
    return value


def _fanout_of(message: Message) -> int:
    return fanout(message.content)


def relay_steps(local_phase: NodeStep, share: NodeStep | None = None,
                step: NodeStep | None = None) -> dict[str, NodeStep]:
    """The node steps of a method on the relay: its local phase, its answer to a pull and
    its step on the relayed payloads (none for `local`), plus `status` and `evaluate`.

    A node listed in `slow-nodes` answers pulls `slow-delay` seconds late.
    """
    steps: dict[str, NodeStep] = {LOCAL: local_phase, STATUS: status, EVALUATE: evaluate}
    if share is not None:
        def answer_pull(node: Node, content: RecordDict) -> RecordDict | dict[str, float]:
            reply = share(node, content)
            delay_if_slow(node)
            return reply
        steps[SHARE] = answer_pull
    if step is not None:
        steps[STEP] = _at_most_once(step)
    return steps


def _at_most_once(step: NodeStep) -> NodeStep:
    """A step applies once per round: the relay re-sends a step whose reply it did not get
    (lost on the way there or back), and a node that already took that round's step answers
    what it answered then instead of mixing the same payloads (and push-sum mass) twice.
    (A re-sent local phase is simply run again: it starts the node afresh, and the same seed
    and data give the same state, from the local-phase cache where one is kept.)"""
    def once(node: Node, content: RecordDict) -> RecordDict | dict[str, float]:
        done = node.store.reply(node.current_round)
        if done is not None:
            return {**done, "replayed": 1.0}
        reply = step(node, content)
        if isinstance(reply, dict):
            node.store.save_reply(node.current_round, reply)
        return reply
    return once


# ======================================================================== relay side
class PullRelay(NodeRecordingStrategy):
    """A ServerApp that only relays: Flower has no node-to-node channel, so serverless pull
    gossip runs through the SuperLink with the ServerApp choosing the pulls.

    Round 0 is every node's local phase (``train.local``). Each later round, every node pulls
    the payloads of `peers` distinct peers (chosen at random under the topology): the relay
    asks each chosen peer for its payload (``query.inference``), forwards the replies
    unchanged to the pullers (``train.gossip``), and every node takes its step. The relay
    never aggregates, never keeps a model, and forgets every payload once it is forwarded.
    Rounds are synchronous: all pulls of round r see the peers as they were at its start.

    Messages a node must honour (ConfigRecord "config" keys):

    - ``train.local``: ``run-dir``; reply metrics ``partition-id``, ``num-examples``.
    - ``query.inference``: ``run-dir``, ``server-round``, ``pullers`` (how many nodes get
      this answer) and ``shared`` (fan-outs of its answers delivered earlier this round);
      reply record ``inference`` (one payload, `flower_gd.codecs`).
    - ``train.gossip``: ``run-dir``, ``server-round``, the peers' payload records (keys from
      `payload_key`; none when every pull failed), ``shared`` (fan-outs of this node's
      delivered answers) and ``relay-from`` (the peers the payloads came from, in their
      order), which the meter uses to count each payload once as peer-to-peer bytes.
    - ``query.status``: reply metrics ``partition-id`` and ``state-round``.
    - ``evaluate``: ``run-dir``; reply metrics ``accuracy``, ``loss`` on the test set.

    Faults: a pull whose peer does not answer within ``pull-timeout`` (dead, slow, message
    lost) is retried on another untried peer up to ``pull-retries`` times, then skipped; the
    puller keeps its state. A step goes on while ``min-nodes`` nodes answer. After every
    round the relay writes a checkpoint (its random stream, counters), so a killed run
    resumes from its last completed round with the nodes' snapshots (``query.status`` finds
    them under their new node ids).

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
    peers : int
        Peers each node pulls per round, in [1, num_nodes - 1].
    pull_timeout, pull_retries, min_nodes
        Fault handling, as above.
    assist : str
        ``none``, or ``next-larger``: in a mixed fleet each node pulls only from nodes of
        the next larger model family (by parameter count) among its candidates, a teacher
        assistant as in IPKD-TA; nodes of the largest family pull from any candidate. A
        failed pull is retried within the same family only; in a single-family fleet (or a
        ring without a larger neighbour) the option changes nothing.
    family_of : Callable[[int], str] | None
        A partition's model family (needed by ``next-larger``).
    """

    def __init__(self, run_dir: str, num_nodes: int, topology: str = "complete", seed: int = 0,
                 recorder: RunRecorder | None = None, peers: int = 1,
                 pull_timeout: float = 600.0, pull_retries: int = 1, min_nodes: int = 2,
                 assist: str = "none", family_of: Callable[[int], str] | None = None) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology={topology!r}: choose one of {list(TOPOLOGIES)}")
        if assist not in PEER_ASSISTS or (assist != "none" and family_of is None):
            raise ValueError(f"assist={assist!r}: choose one of {list(PEER_ASSISTS)} "
                             "(next-larger needs family_of)")
        if peers < 1 or peers >= num_nodes:
            raise ValueError(f"peers={peers} must be in [1, num_nodes - 1]")
        super().__init__(run_dir, num_nodes, recorder, min_nodes=min_nodes)
        self.topology = topology
        self.assist = assist
        self.family_of = family_of
        self.peers_per_round = peers
        self.rng = np.random.default_rng(seed)
        self.pull_timeout = pull_timeout
        self.pull_retries = pull_retries
        self._relay: dict[int, list[tuple[int, Message]]] = {}  # dst -> [(src, share reply)]
        self._delivered: dict[int, list[int]] = {}  # src -> fan-out of each delivered answer
        self.failed_pulls = 0
        self._short: set[int] = set()  # nodes warned of having fewer candidates than peers

    @classmethod
    def relay_options(cls, run: ServerRun) -> dict[str, Any]:
        """The constructor arguments every relay method takes from the run config."""
        cfg = run.cfg
        return {"run_dir": run.run_dir, "num_nodes": cfg.num_nodes, "topology": cfg.topology,
                "seed": cfg.seed, "recorder": run.recorder, "pull_timeout": cfg.pull_timeout,
                "pull_retries": cfg.pull_retries, "min_nodes": cfg.min_nodes,
                "assist": cfg.gossip_assist, "family_of": cfg.model_for}

    def run(self, run: ServerRun, num_rounds: int) -> dict[str, Any]:
        """Run to the end on `run`'s grid; the summary gains the count of failed pulls."""
        self.start(grid=run.grid, num_rounds=num_rounds, timeout=run.cfg.round_timeout)
        return {"failed-pulls": self.failed_pulls}

    def summary(self) -> None:
        log(INFO, "\t├── %s: relay-only ServerApp, topology=%s, %s peer(s) per round%s",
            type(self).__name__, self.topology, self.peers_per_round,
            "" if self.assist == "none" else f", pulls from the {self.assist} family")

    # --- the local phase ------------------------------------------------------------------
    def local_phase(self, grid: Grid, timeout: float) -> MetricRecord:
        """Round 0: every node runs its local phase; then every node evaluates.

        A local phase lost on the way (either way) or unanswered is re-sent, as a step is
        (`send_until_answered`; a node whose reply was lost runs it again). A node still silent
        is asked whether it holds state (it may have finished late); nodes with no state have
        nothing to share: the run goes on without them while at least `min-nodes` remain.
        """
        got = self.collect(0, self.send_until_answered(
            grid, 0, {n: partial(self.message, n, LOCAL, 0) for n in self.node_ids},
            timeout), "local phase")
        for node, reply in got.items():
            self.register(node, partition_of_reply(reply))
        silent = sorted(set(self.node_ids) - set(got))
        found = self.with_state(grid, silent, timeout) if silent else {}
        for node, partition in found.items():
            self.register(node, partition)
        ready = {**got, **found}
        self.require_min(ready, "the local phase")
        self.node_ids = sorted(ready)
        return self.evaluate_round(grid, 0, timeout)

    def send_until_answered(self, grid: Grid, server_round: int,
                            make: dict[int, Callable[[], Message]], timeout: float
                            ) -> list[Message]:
        """Send each node its message (`make[node]()` builds it) and re-send those whose
        reply did not come back (lost either way, or no reply in time: `_worth_retrying`),
        after STEP_ATTEMPTS tries or once `timeout` has run out stopping; returns the last
        reply (or error) of every node that gave one. Safe only for messages a node applies
        at most once (`_at_most_once`) or that give the same result when applied again."""
        deadline = time.time() + timeout
        final: dict[int, Message] = {}
        pending = [make[n]() for n in make]
        for attempt in range(STEP_ATTEMPTS):
            replies = grid.send_and_receive(pending, timeout=max(deadline - time.time(), 0.0))
            # a reply, or an error standing in for one, answers the message it replies to
            dst_of = {m.metadata.message_id: m.metadata.dst_node_id for m in pending}
            by_node = {dst_of[r.metadata.reply_to_message_id]: r for r in replies
                       if r.metadata.reply_to_message_id in dst_of}
            final.update(by_node)
            retry = [m.metadata.dst_node_id for m in pending
                     if _worth_retrying(by_node.get(m.metadata.dst_node_id))]
            if not retry or time.time() >= deadline:
                break
            log(WARNING, "round %s: %s message(s) got no reply; sending again (try %s)",
                server_round, len(retry), attempt + 2)
            pending = [make[dst]() for dst in retry]
        return list(final.values())

    # --- who pulls from whom --------------------------------------------------------------
    def candidates(self, node: int, node_ids: list[int]) -> list[int]:
        """The peers `node` may pull from under the topology (and `assist`), in partition
        order."""
        by_partition = self.by_partition(node_ids)
        if self.topology == "ring":
            pos = by_partition.index(node)
            ring = [by_partition[(pos - 1) % len(by_partition)],
                    by_partition[(pos + 1) % len(by_partition)]]
            found = list(dict.fromkeys(c for c in ring if c != node))
        else:
            found = [n for n in by_partition if n != node]
        return self._assisted(node, found) if self.assist == "next-larger" else found

    def _assisted(self, node: int, candidates: list[int]) -> list[int]:
        """`next-larger`: the candidates of the smallest family larger than `node`'s own
        (all of them where no candidate's family is larger)."""
        family_of = self.family_of
        assert family_of is not None  # the constructor refuses next-larger without it

        def size(n: int) -> int:
            return parameter_count(family_of(self.partition_of.get(n, n)))
        larger = [c for c in candidates if size(c) > size(node)]
        if not larger:
            return candidates
        step = min(size(c) for c in larger)
        return [c for c in larger if size(c) == step]

    def choose_peers(self, node_ids: list[int], k: int = 1) -> dict[int, list[int]]:
        """Pick, for every node, the k distinct peers it pulls from this round (pull gossip)."""
        pulls: dict[int, list[int]] = {}
        for node in self.by_partition(node_ids):
            candidates = self.candidates(node, node_ids)
            if len(candidates) < k and node not in self._short:
                self._short.add(node)  # once per node and run
                log(WARNING, "partition %s has %s candidate peer(s) under %s%s: it pulls "
                    "%s, not %s", self.partition_of.get(node, node), len(candidates),
                    self.topology, "" if self.assist == "none" else f" and {self.assist}",
                    len(candidates), k)
            if not candidates:  # alone (min-nodes=1): nobody to pull from this round
                pulls[node] = []
                continue
            if k == 1:  # the paper's single pull (and the same random stream as before)
                chosen = [int(self.rng.integers(len(candidates)))]
            else:
                chosen = [int(i) for i in self.rng.choice(len(candidates),
                                                         size=min(k, len(candidates)),
                                                         replace=False)]
            pulls[node] = [candidates[i] for i in chosen]
        return pulls

    # --- one round --------------------------------------------------------------------------
    def configure_query(self, server_round: int, pulls: dict[int, list[int]]) -> list[Message]:
        """Ask each chosen peer for its current payload, with its delivery receipts: how many
        nodes pull it now and the fan-outs of its answers delivered earlier this round."""
        fanout: dict[int, int] = {}
        for sources in pulls.values():
            for src in sources:
                fanout[src] = fanout.get(src, 0) + 1
        messages = []
        for src in sorted(fanout):
            message = self.message(src, SHARE, server_round)
            config = message.content.config_records[CONFIG_KEY]
            config[FANOUT_KEY] = fanout[src]
            if self._delivered.get(src):
                config[DELIVERED_KEY] = list(self._delivered[src])
            messages.append(message)
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Forward each pulled payload, unchanged, to the node that pulled it. Every node gets
        a step message, with no payload when all its pulls failed, and the receipts of its
        own delivered answers."""
        return [self.step_message(dst, server_round)
                for dst in self.by_partition(self.node_ids)]

    def step_message(self, dst: int, server_round: int) -> Message:
        """Node `dst`'s step: the payloads it pulled, and the receipts of its own answers."""
        relayed = self._relay.get(dst, [])
        content = RecordDict()
        for i, (_, reply) in enumerate(relayed):
            content[payload_key(i)] = payload_record(reply.content)
        message = self.message(dst, STEP, server_round, content)
        config = message.content.config_records[CONFIG_KEY]
        if relayed:
            config[RELAY_FROM_KEY] = [s for s, _ in relayed]
        if self._delivered.get(dst):
            config[DELIVERED_KEY] = list(self._delivered[dst])
        return message

    def deliver_steps(self, grid: Grid, server_round: int, timeout: float) -> list[Message]:
        """Every node's step, re-sent until its reply comes back (`send_until_answered`): a
        step lost on the way there, or whose reply was lost, would otherwise drop the
        payloads' push-sum mass and the node's receipts. Nodes apply a step at most once (a
        re-sent one is replayed), so re-sending is safe."""
        order = self.by_partition(self.node_ids)
        return self.send_until_answered(
            grid, server_round,
            {dst: partial(self.step_message, dst, server_round) for dst in order},
            timeout)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record each node's step metrics; there is no global model to aggregate. The run
        goes on while at least `min-nodes` nodes took their step (`require_min`)."""
        got = self.collect(server_round, replies, "gossip step")
        self.require_min(got, f"round {server_round}: the gossip step")
        metrics = [metrics_of(m) for m in got.values()]
        # only nodes that trained on labels this round report their quality (a node with no
        # payload did not): the others are left out, not counted as 0
        label_accs = [m["label-accuracy"] for m in metrics if "label-accuracy" in m]
        summary: dict[str, int | float | list[int] | list[float]] = {
            "nodes-updated": float(len(got)),
            "payloads-rejected": sum(m.get("payload-rejected", 0.0) for m in metrics)}
        if label_accs:
            summary["median-label-accuracy"] = statistics.median(label_accs)
        return None, MetricRecord(summary)

    def pull(self, grid: Grid, server_round: int) -> None:
        """Pull from the chosen peers; a pull whose peer does not answer within `pull-timeout`
        (dead, slow, lost message) is retried on another untried peer, `pull-retries` times,
        then skipped. Fills the relay table and the delivery receipts."""
        want = self.choose_peers(self.node_ids, self.peers_per_round)
        tried = {dst: {dst, *srcs} for dst, srcs in want.items()}
        self._relay = {dst: [] for dst in want}
        self._delivered = {}
        failed: dict[int, int] = {}
        for attempt in range(self.pull_retries + 1):
            if not any(want.values()):
                break
            queries = self.configure_query(server_round, want)
            fanout = {m.metadata.dst_node_id: _fanout_of(m) for m in queries}
            replies = grid.send_and_receive(queries, timeout=self.pull_timeout)
            answers = self.collect(server_round, replies, "pull")
            empty = [s for s, r in answers.items() if PAYLOAD_KEY not in r.content.config_records]
            for src in empty:
                log(WARNING, "round %s: node %s answered a pull without a payload record "
                    "(other code?); counted as a failed pull", server_round, src)
                del answers[src]
            for src in answers:
                self._delivered.setdefault(src, []).append(fanout[src])
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
        replies = self.deliver_steps(grid, server_round, timeout)
        self._relay = {}  # relay only: forwarded payloads are not kept
        self._delivered = {}
        return self.aggregate_train(server_round, replies)[1]

    # --- resume -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the relay needs to go on after a crash: its random stream and its counters."""
        return {"rng": self.rng.bit_generator.state, "failed-pulls": self.failed_pulls}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.failed_pulls = int(state["failed-pulls"])

    def checkpoint(self, server_round: int) -> None:
        if self.recorder is not None:
            self.recorder.checkpoint(server_round, self.state())

    # --- the run ------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Local phase, then `num_rounds` synchronous rounds; nodes evaluate each round.

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
