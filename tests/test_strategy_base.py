"""What every server-side strategy shares: replies collected in partition order."""

import itertools

import pytest
from flwr.app import Error, Message, MetricRecord, RecordDict

from flower_gd.strategy_base import NodeRecordingStrategy

pytestmark = pytest.mark.usefixtures("task_identity")


def _reply(node_id: int, partition: int | None) -> Message:
    ask = Message(content=RecordDict(), dst_node_id=node_id, message_type="train.x")
    ask.metadata.__dict__["_message_id"] = f"m{node_id}"
    metrics = {} if partition is None else {"partition-id": float(partition)}
    reply = Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=ask)
    reply.metadata.__dict__["_src_node_id"] = node_id
    return reply


def test_replies_are_collected_in_partition_order_whatever_order_they_arrive_in():
    """Node ids fall as partitions rise (an order by node id would fail), and a reply that
    reports no partition comes last."""
    class Strategy(NodeRecordingStrategy):  # the abstract parts are not used here
        aggregate_train = configure_train = summary = None  # type: ignore[assignment]

    strategy = Strategy("/unused", num_nodes=5)
    failed = Message(Error(code=0, reason="node died"), reply_to=_reply(5, 0))
    failed.metadata.__dict__["_src_node_id"] = 5
    replies = [_reply(40, 0), _reply(30, 1), _reply(20, 2), _reply(10, None), failed]
    for order in itertools.permutations(replies):
        assert list(strategy.collect(1, order, "upload")) == [40, 30, 20, 10]  # 5 failed
