"""DLAD's server: the adaptive target from decoded uploads, by hand; bad uploads left out."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from baselines import dlad
from flower_gd.codecs import Codec, InferencePayload, encode_payload
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.federation import federated_data
from flower_gd.training import OptimConfig

pytestmark = pytest.mark.usefixtures("task_identity")
C = 10


def _upload(node_id: int, partition: int, probs, confidence, codec="float32") -> Message:
    """A node's reply to `train.dlad`, as the ClientApp builds it."""
    content = encode_payload(InferencePayload(np.asarray(probs, np.float32), 1, "probs",
                                              confidence=np.asarray(confidence)),
                             Codec(codec, compress=False))
    content["metrics"] = MetricRecord({"partition-id": float(partition)})
    ask = Message(content=RecordDict(), dst_node_id=node_id, message_type=dlad.UPLOAD)
    ask.metadata.__dict__["_message_id"] = f"m{node_id}"
    reply = Message(content, reply_to=ask)
    reply.metadata.__dict__["_src_node_id"] = node_id
    return reply


def test_the_server_distils_the_hand_computed_adaptive_target(tmp_path, monkeypatch):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {
        "method": "dlad", "num-nodes": 3, "common-limit": 4, "test-limit": 20}))
    data = federated_data(cfg, 3)
    n = len(data.split.common)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(C), size=(3, n))
    conf = rng.uniform(0.05, 0.95, size=(3, n))
    seen = {}

    def spy(model, x, target, *args, **kwargs):
        seen["target"] = target
        return 0.0

    monkeypatch.setattr(dlad, "train_soft", spy)
    server = dlad.DLAD(str(tmp_path), 3, data, "cnn", OptimConfig(0.05, 0.9, 0, 40), 1, 1.0, 0)
    server.node_ids = [900, 17, 55]
    replies = [_upload(900, 2, probs[2], conf[2]), _upload(17, 0, probs[0], conf[0]),
               _upload(55, 1, probs[1], conf[1])]
    server.distil(0, replies)
    # y(x) = sum_i d_i(x) p_i(x) / sum_j d_j(x), per common sample, by hand
    by_hand = np.einsum("in,inc->nc", conf / conf.sum(0), probs)
    np.testing.assert_allclose(seen["target"], by_hand, rtol=1e-5, atol=1e-6)


def test_a_bad_upload_is_left_out_of_the_target(tmp_path, monkeypatch):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {
        "method": "dlad", "num-nodes": 3, "common-limit": 4, "test-limit": 20}))
    data = federated_data(cfg, 3)
    n = len(data.split.common)
    probs = np.full((3, n, C), 1 / C)
    probs[0, :, 0], probs[0, :, 1:] = 0.91, 0.01  # node 0 says class 0
    probs[1, :, 3], probs[1, :, [0, 1, 2, *range(4, C)]] = 0.91, 0.01  # node 1 says class 3
    seen = {}

    def spy(model, x, target, *args, **kwargs):
        seen["t"] = target
        return 0.0

    monkeypatch.setattr(dlad, "train_soft", spy)
    server = dlad.DLAD(str(tmp_path), 3, data, "cnn", OptimConfig(0.05, 0.9, 0, 40), 1, 1.0, 0,
                       min_nodes=2)
    server.node_ids = [1, 2, 3]
    broken = probs[2].copy()
    broken[0, 0] = np.nan
    server.distil(0, [_upload(1, 0, probs[0], np.full(n, 0.5)),
                      _upload(2, 1, probs[1], np.full(n, 0.5)),
                      _upload(3, 2, broken, np.full(n, 0.5))])
    # equal confidences: the plain mean of the two valid uploads, node 2 left out
    np.testing.assert_allclose(seen["t"], (probs[0] + probs[1]) / 2, rtol=1e-5)
