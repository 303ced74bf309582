"""Plumbing shared by this project's strategies: messages, per-node records, node evaluation.

Both sides of evaluation live here: the strategy asks every node to evaluate (its own model,
or arrays it is sent) and `evaluate` is the node step that answers.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flower_gd.codecs import (
    ARRAYS_KEY,
    CONFIG_KEY,
    Expect,
    InferencePayload,
    PayloadError,
    decode_payload,
)
from flower_gd.fleet import wait_for_nodes
from flower_gd.node import RUN_DIR_KEY, Node
from flower_gd.results import RunRecorder

EVALUATE = "evaluate"
STATUS = "query.status"


def metrics_of(reply: Message) -> dict[str, float]:
    """The scalar metrics a node reported in its reply's ``metrics`` record."""
    record = reply.content.metric_records.get("metrics")
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


def partition_of_reply(reply: Message) -> int:
    """The partition id a node reports in its reply's metrics."""
    return int(metrics_of(reply)["partition-id"])


def _partition_order(reply: Message) -> tuple[float, int]:
    partition = (float("inf") if reply.has_error()
                 else metrics_of(reply).get("partition-id", float("inf")))
    return partition, reply.metadata.src_node_id


def evaluate(node: Node, content: RecordDict) -> dict[str, float]:
    """Node side: test-set accuracy of a global model sent as `arrays`, or else of this
    node's own model as of the message's round."""
    if ARRAYS_KEY in content.array_records:
        model = node.new_model(family=node.cfg.global_model)
        model.load_state_dict(content.array_records[ARRAYS_KEY].to_torch_state_dict())
    else:
        model = node.load_model()
    return {**node.test_metrics(model), "num-examples": len(node.data.test[1])}


class NodeRecordingStrategy(Strategy):
    """A Strategy over a fixed fleet whose nodes report per-node metrics to a RunRecorder.

    Subclasses implement the method; this class builds messages carrying the run's
    ``config`` (``run-dir``, ``server-round``), maps node ids to partition ids, and asks every
    node to evaluate a model on the test set (its own, or arrays it is sent).
    """

    def __init__(self, run_dir: str, num_nodes: int, recorder: RunRecorder | None = None,
                 min_nodes: int = 2) -> None:
        self.run_dir = run_dir
        self.num_nodes = num_nodes
        self.min_nodes = min_nodes
        self.recorder = recorder
        self.node_ids: list[int] = []
        self.partition_of: dict[int, int] = {}  # node_id -> partition id

    def server_work(self) -> contextlib.AbstractContextManager[None]:
        """Time the method's own server computation (see `RunRecorder.server_work`)."""
        return self.recorder.server_work() if self.recorder else contextlib.nullcontext()

    def connect(self, grid: Grid, timeout: float) -> list[int]:
        """Wait for the whole fleet; later messages go to exactly these nodes."""
        self.node_ids = wait_for_nodes(grid, self.num_nodes, timeout=min(timeout, 300))
        return self.node_ids

    def message(self, node_id: int, message_type: str, server_round: int,
                content: RecordDict | None = None) -> Message:
        content = RecordDict() if content is None else content
        content[CONFIG_KEY] = ConfigRecord({RUN_DIR_KEY: self.run_dir,
                                            "server-round": server_round})
        return Message(content=content, dst_node_id=node_id, message_type=message_type,
                       group_id=str(server_round))

    def register(self, node_id: int, partition_id: int) -> None:
        self.partition_of[node_id] = partition_id
        if self.recorder is not None:
            self.recorder.add_node(node_id, partition_id)

    def collect(self, server_round: int, replies: Iterable[Message], what: str
                ) -> dict[int, Message]:
        """Valid replies by node, in partition order (replies without one last, by node id);
        failures are logged and skipped (the node keeps its state).

        Replies arrive in any order and node ids are random per run: whatever a strategy sums
        or concatenates from them in this order is bit-for-bit reproducible."""
        out = {}
        for reply in sorted(replies, key=_partition_order):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "round %s: %s failed on node %s: %s", server_round, what, node,
                    reply.error.reason)
                continue
            out[node] = reply
            if self.recorder is not None:
                self.recorder.mark_alive(server_round, node)
                if "metrics" in reply.content:
                    self.recorder.record(server_round, node, metrics_of(reply))
        return out

    def valid_uploads(self, server_round: int, replies: Iterable[Message], what: str,
                      shape: tuple[int, int], expect: Expect) -> dict[int, InferencePayload]:
        """The decoded payload of every reply that passes validation, by node in partition
        order (the nodes registered by the partition they report). A refused upload is
        logged and recorded on its node as `payload-rejected`; the round goes on while
        `min-nodes` uploads are valid (`require_min`)."""
        valid: dict[int, InferencePayload] = {}
        for node, reply in self.collect(server_round, replies, what).items():
            try:
                self.register(node, partition_of_reply(reply))
                valid[node] = decode_payload(reply.content, shape, expect=expect)
            except (PayloadError, KeyError, ValueError) as err:  # KeyError: no partition-id
                log(WARNING, "%s: rejected the upload of node %s: %s", what, node, err)
                if self.recorder is not None:
                    self.recorder.record(server_round, node, {"payload-rejected": 1.0})
        self.require_min(valid, f"the {what}")
        return valid

    def require_min(self, got: dict[int, Any], what: str) -> None:
        """Go on with the nodes that answered, as long as at least `min-nodes` did."""
        missing = self.by_partition(set(self.node_ids) - set(got))
        named = [f"partition {self.partition_of[n]}" if n in self.partition_of else f"node {n}"
                 for n in missing]
        if len(got) < self.min_nodes:
            raise RuntimeError(f"{what}: only {len(got)} node(s) answered, fewer than "
                               f"min-nodes={self.min_nodes} (failed: {', '.join(named)}); "
                               "see the log")
        if missing:
            log(WARNING, "%s: %s did not answer; going on with %s nodes", what,
                ", ".join(named), len(got))

    def by_partition(self, nodes: Iterable[int]) -> list[int]:
        """`nodes` in partition order (nodes not yet known by their partition last, by id):
        the order every strategy handles nodes in, whatever order Flower lists them in."""
        return sorted(nodes, key=lambda n: (n not in self.partition_of,
                                            self.partition_of.get(n, n)))

    def with_state(self, grid: Grid, nodes: list[int], timeout: float) -> dict[int, int]:
        """Ask `nodes` which partition they are and whether they hold state
        (`query.status`); returns node id -> partition id for those that do."""
        replies = grid.send_and_receive([self.message(n, STATUS, 0) for n in nodes],
                                        timeout=timeout)
        found = {}
        for reply in replies:
            if not reply.has_error() and metrics_of(reply).get("state-round", -1) >= 0:
                found[reply.metadata.src_node_id] = partition_of_reply(reply)
                if self.recorder is not None:
                    self.recorder.mark_alive(0, reply.metadata.src_node_id)
        return found

    def reattach(self, grid: Grid, timeout: float) -> None:
        """After a restart node ids are new: go on with the nodes that hold state."""
        found = self.with_state(grid, self.node_ids, timeout)
        for node, partition in found.items():
            self.register(node, partition)
        self.require_min(found, "resume")
        self.node_ids = sorted(found)

    # --- evaluation: every node, on its test set --------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Evaluate `arrays` on every node if given (a global model), else each node's own."""
        messages = []
        for n in self.node_ids:
            content = RecordDict({ARRAYS_KEY: arrays}) if len(arrays) else None
            messages.append(self.message(n, EVALUATE, server_round, content))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Median, min and max node accuracy (the paper reports the median over nodes)."""
        got = self.collect(server_round, replies, "evaluation")
        accs = [metrics_of(m)["accuracy"] for m in got.values()]
        if not accs:
            return None
        return MetricRecord({"median-accuracy": statistics.median(accs),
                             "min-accuracy": min(accs), "max-accuracy": max(accs)})

    def evaluate_round(self, grid: Grid, server_round: int, timeout: float,
                       arrays: ArrayRecord | None = None) -> MetricRecord:
        """Evaluate on every node, log, and close the round in the recorder."""
        replies = grid.send_and_receive(
            self.configure_evaluate(server_round, arrays or ArrayRecord(), ConfigRecord(), grid),
            timeout=timeout)
        metrics = self.aggregate_evaluate(server_round, replies) or MetricRecord()
        log(INFO, "round %s: %s", server_round, dict(metrics))
        if self.recorder is not None:
            self.recorder.end_round(server_round)
        return metrics
