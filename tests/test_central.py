"""The central bound pools uploads in partition order, so random node ids cannot change it."""

import numpy as np
import pytest
from flwr.app import Message, RecordDict

from baselines.central import CentralTraining, share_private
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.federation import federated_data
from flower_gd.node import Node
from flower_gd.training import OptimConfig

pytestmark = pytest.mark.usefixtures("task_identity")


def _uploads(cfg, node_ids):
    """Replies of partitions 0 and 1, sent by the given (random) node ids."""
    replies = []
    for pid, node_id in enumerate(node_ids):
        ins = Message(content=RecordDict(), dst_node_id=node_id, message_type="query.private_data")
        ins.metadata.__dict__["_message_id"] = f"m{node_id}"
        reply = Message(share_private(Node(cfg, pid, 2, "/unused")), reply_to=ins)
        reply.metadata.__dict__["_src_node_id"] = node_id
        replies.append(reply)
    return replies


def test_central_model_does_not_depend_on_node_ids(tmp_path):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {
        "num-nodes": 2, "method": "central", "test-limit": 50}))
    data = federated_data(cfg, 2)
    results = []
    for node_ids in ([11, 99], [99, 11]):  # partition 0 sent by the smaller, then larger id
        strategy = CentralTraining(str(tmp_path), 2, data, "cnn", OptimConfig(0.05, 0.9, 0, 40),
                                   epochs=1, seed=0, pooled_private=True)
        strategy.node_ids = sorted(node_ids)
        arrays, metrics = strategy.aggregate_train(0, _uploads(cfg, node_ids))
        results.append((arrays, metrics["accuracy"]))
    (a, acc_a), (b, acc_b) = results
    assert acc_a == acc_b
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
