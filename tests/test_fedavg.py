"""FedAvg is Flower's own strategy: its aggregation is used unchanged, with per-node records."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from baselines.fedavg import NODE_INFO_KEY, RecordedFedAvg
from flower_gd import methods
from flower_gd.config import ConfigError, load_defaults, merge_overrides

pytestmark = pytest.mark.usefixtures("task_identity")


def _reply(node_id: int, partition: int, weight: float, n: int) -> Message:
    ins = Message(content=RecordDict(), dst_node_id=node_id, message_type="train")
    ins.metadata.__dict__["_message_id"] = f"m{node_id}"
    reply = Message(RecordDict({
        "arrays": ArrayRecord({"w": Array(np.full(3, weight, dtype=np.float32))}),
        "metrics": MetricRecord({"train-loss": 1.0, "num-examples": n}),
        NODE_INFO_KEY: ConfigRecord({"partition-id": partition}),
    }), reply_to=ins)
    reply.metadata.__dict__["_src_node_id"] = node_id
    return reply


def test_recorded_fedavg_is_flowers_fedavg_and_weights_by_num_examples():
    strategy = RecordedFedAvg(num_nodes=2)
    assert isinstance(strategy, FedAvg)
    arrays, metrics = strategy.aggregate_train(1, [_reply(11, 0, 1.0, 30), _reply(12, 1, 3.0, 10)])
    # (1.0 * 30 + 3.0 * 10) / 40 = 1.5, by hand
    np.testing.assert_allclose(arrays["w"].numpy(), [1.5, 1.5, 1.5])
    assert strategy.partition_of == {11: 0, 12: 1}


def test_fedavg_refuses_mixed_architectures():
    cfg = merge_overrides(load_defaults(), {"method": "fedavg", "model": "cnn,resnet18"})
    with pytest.raises(ConfigError, match="cannot mix|same architecture"):
        methods.load_config(cfg)
