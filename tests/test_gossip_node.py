"""Node-side gossip steps on digits: state on disk, Eq. 1 counters, label leak, bad payloads."""

import re
from dataclasses import replace

import numpy as np
import pytest
from payload_edit import meta, rewrite

from flower_gd.codecs import decode_payload
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.node import Node
from strategies import gossip

SMALL = {"num-nodes": 3, "local-epochs": 2, "common-limit": 120, "test-limit": 60,
         "partition-scheme": "niid1"}


def _node(tmp_path, pid, **overrides):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {**SMALL, **overrides}))
    return Node(cfg, pid, cfg.num_nodes, str(tmp_path))


def _step(node, content, server_round=1):
    """The node's gossip step as a message of `server_round` delivers it."""
    return gossip.gossip_step(replace(node, server_round=server_round), content)


def test_local_phase_keeps_weights_and_list_on_disk_with_counter_one(tmp_path):
    node = _node(tmp_path, 0)
    metrics = gossip.local_phase(node)
    assert metrics["partition-id"] == 0 and metrics["num-examples"] > 0
    assert node.store.snapshot().has_model()
    il = node.store.snapshot().array("inference-list")
    assert il.shape == (120, 10)
    np.testing.assert_allclose(il.sum(axis=1), 1.0, rtol=1e-5)
    assert node.store.snapshot().meta["counter"] == 1


def test_gossip_step_mixes_the_peer_retrains_and_counts(tmp_path, monkeypatch):
    a, b = _node(tmp_path, 0), _node(tmp_path, 1)
    gossip.local_phase(a)
    gossip.local_phase(b)
    il_a = a.store.snapshot().array("inference-list")
    il_b = b.store.snapshot().array("inference-list")
    seen = {}
    real_train = gossip.train_hard

    def spy(model, x, y, *args, **kwargs):
        seen["labels"] = y.copy()
        return real_train(model, x, y, *args, **kwargs)

    monkeypatch.setattr(gossip, "train_hard", spy)
    metrics = _step(a, gossip.share(b))
    # trained on argmax of Eq. 1 with C_a = C_b = 1, i.e. of the mean
    np.testing.assert_array_equal(seen["labels"], ((il_a + il_b) / 2).argmax(axis=1))
    assert metrics["counter"] == 2 and a.store.snapshot().meta["counter"] == 2
    assert not np.array_equal(a.store.snapshot().array("inference-list"), il_a)  # re-inferred
    shared = decode_payload(gossip.share(a), il_a.shape)
    assert shared.counter == 2


def test_ground_truth_switch_trains_on_true_labels(tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match="LABEL LEAK"):
        a = _node(tmp_path, 0, **{"label-source": "ground-truth"})
        b = _node(tmp_path, 1, **{"label-source": "ground-truth"})
    gossip.local_phase(a)
    gossip.local_phase(b)
    seen = {}

    def record_labels(model, x, y, *args, **kwargs):
        seen["labels"] = y
        return 0.0

    monkeypatch.setattr(gossip, "train_hard", record_labels)
    _step(a, gossip.share(b))
    np.testing.assert_array_equal(seen["labels"], a.data.common_y)


def _malformed(content, what):
    """A peer's payload broken in one way: what a faulty or Byzantine peer might send."""
    from flower_gd.codecs import Codec, InferencePayload, encode_payload

    if what == "counter":
        return rewrite(content, counter=-5)
    if what == "absurd counter":
        return rewrite(content, counter=10**12)
    sent = decode_payload(content, (120, 10))
    scores = sent.scores.copy()
    if what == "shape":
        scores = scores[:-1]
    elif what == "NaN":
        scores[3, 2] = np.nan
    elif what == "negative":
        scores[0, :2] = [1.5, -0.5]
    return encode_payload(InferencePayload(scores, sent.counter, sent.kind), Codec(compress=False))


@pytest.mark.parametrize("what, match", [
    ("counter", "counter -5"), ("absurd counter", "out of range"), ("shape", "shape"),
    ("NaN", "NaN/inf"), ("negative", "negative"),
])
def test_a_malformed_payload_is_rejected_and_the_node_state_untouched(tmp_path, caplog, what,
                                                                      match):
    a, b = _node(tmp_path, 0), _node(tmp_path, 1)
    gossip.local_phase(a)
    gossip.local_phase(b)
    before = {p: p.read_bytes() for p in a.store.root.rglob('*') if p.is_file()}
    metrics = _step(a, _malformed(gossip.share(b), what))
    assert metrics["peers"] == 0 and metrics["payload-rejected"] == 1
    assert re.search(match, caplog.text)  # the log names the problem
    assert {p: p.read_bytes() for p in a.store.root.rglob('*') if p.is_file()} == before


def test_a_node_refuses_a_federation_of_another_size(tmp_path):
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, RecordDict

    cfg = merge_overrides(load_defaults(), SMALL)
    context = SimpleNamespace(run_config=cfg, node_config={"partition-id": 0, "num-partitions": 5})
    config = ConfigRecord({"run-dir": str(tmp_path)})
    message = SimpleNamespace(content=RecordDict({"config": config}))
    with pytest.raises(ValueError, match="federation has 5 nodes but num-nodes=3"):
        Node.from_message(message, context, RunConfig.from_mapping(cfg))


def test_paper_gossip_runs_on_a_compact_codec(tmp_path):
    """The paper's method with uint8 payloads: the peer's list arrives quantized."""
    a, b = _node(tmp_path, 0, codec="uint8"), _node(tmp_path, 1, codec="uint8")
    gossip.local_phase(a)
    gossip.local_phase(b)
    sent = gossip.share(b)
    assert meta(sent)["codec"] == "uint8"
    il_b = b.store.snapshot().array("inference-list")
    got = decode_payload(sent, il_b.shape).scores
    assert np.abs(got - il_b).max() <= 1.0 / 255
    assert _step(a, sent)["counter"] == 2
