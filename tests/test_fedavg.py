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


def test_the_average_does_not_depend_on_the_order_replies_arrive_in():
    """float32 sums depend on their order; replies arrive in any order. Values whose sum
    cancels catastrophically tell the orders apart: (a + b) + c != a + (b + c)."""
    import itertools

    values = {0: 1.0, 1: 1e8, 2: -1e8}
    # node ids fall as the partition rises, and the reverse order sums to 1/3, not 0:
    # sorting by node id would not pass
    in_partition_order = 0.0
    results = set()
    for order in itertools.permutations(values):
        replies = [_reply(30 - p, p, values[p], 10) for p in order]
        arrays, _ = RecordedFedAvg(num_nodes=3).aggregate_train(1, replies)
        results.add(arrays["w"].numpy().tobytes())
        np.testing.assert_array_equal(arrays["w"].numpy(), np.full(3, in_partition_order))
    assert len(results) == 1


def test_fedavg_refuses_mixed_architectures():
    cfg = merge_overrides(load_defaults(), {"method": "fedavg", "model": "cnn,resnet18"})
    with pytest.raises(ConfigError, match="cannot mix|same architecture"):
        methods.load_config(cfg)


def test_the_global_model_is_evaluated_once_per_round_for_every_node_that_trained():
    import contextlib
    from types import SimpleNamespace

    import torch

    class Recorder:
        def __init__(self):
            self.alive = {1: {11, 12}}
            self.rows, self.ended, self.busy = [], [], 0

        def record(self, rnd, node, metrics):
            self.rows.append((rnd, node, dict(metrics)))

        def end_round(self, rnd):
            self.ended.append(rnd)

        @contextlib.contextmanager
        def server_work(self):
            self.busy += 1
            yield

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    data = SimpleNamespace(test=(x, rng.integers(0, 3, 40)), val=(x[:20], rng.integers(0, 3, 20)))
    model = torch.nn.Linear(4, 3)
    trained = torch.nn.Linear(4, 3)
    with torch.no_grad():
        trained.bias.copy_(torch.tensor([0.0, 0.0, 9.0]))  # answers class 2 for everything
    recorder = Recorder()
    evaluate_fn = RecordedFedAvg(num_nodes=2, recorder=recorder).global_evaluation(model, data)
    assert evaluate_fn(0, ArrayRecord(model.state_dict())) is None  # no node took part yet
    result = evaluate_fn(1, ArrayRecord(trained.state_dict()))
    share = float((data.test[1] == 2).mean())  # the trained arrays were evaluated, not `model`'s
    assert result["accuracy"] == pytest.approx(share)
    assert result["top-share"] == 1.0
    assert sorted(node for _, node, _ in recorder.rows) == [11, 12]
    assert all(m == dict(result) for _, _, m in recorder.rows)  # the same global metrics
    assert recorder.ended == [1] and recorder.busy == 1
    assert RecordedFedAvg(num_nodes=2).fraction_evaluate == 0.0  # no node evaluates
