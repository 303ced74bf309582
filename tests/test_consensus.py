"""FedMD's and DS-FL's servers and node steps: aggregation by hand, subsets, bad uploads."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import Message, MetricRecord, RecordDict

from baselines import consensus, ds_fl, fedmd
from flower_gd.codecs import Codec, InferencePayload, PayloadError, encode_payload
from flower_gd.config import ConfigError, RunConfig, load_defaults, merge_overrides
from flower_gd.distill import public_subset
from flower_gd.node import Node
from flower_gd.training import infer, softmax

C = 10
SMALL = {"num-nodes": 3, "local-epochs": 2, "common-limit": 120, "test-limit": 60,
         "public-per-round": 40, "revisit-epochs": 1}


def _cfg(method, **overrides):
    return RunConfig.from_mapping(merge_overrides(load_defaults(), {
        **SMALL, "method": method, **overrides}))


def _upload(node_id: int, partition: int, scores, kind: str) -> Message:
    """A node's reply to `query.scores`, as the ClientApp builds it."""
    content = encode_payload(InferencePayload(np.asarray(scores, np.float32), 1, kind),
                             Codec("float32", compress=False))
    content["metrics"] = MetricRecord({"partition-id": float(partition)})
    ask = Message(content=RecordDict(), dst_node_id=node_id, message_type=consensus.QUERY)
    ask.metadata.__dict__["_message_id"] = f"m{node_id}"
    reply = Message(content, reply_to=ask)
    reply.metadata.__dict__["_src_node_id"] = node_id
    return reply


def test_the_public_subset_is_fixed_by_seed_and_round_and_zero_means_all():
    a = public_subset(100, 30, seed=4, server_round=2)
    assert len(a) == 30 and len(set(a)) == 30 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, public_subset(100, 30, 4, 2))  # both sides agree
    assert not np.array_equal(a, public_subset(100, 30, 4, 3))  # afresh each round
    assert not np.array_equal(a, public_subset(100, 30, 5, 2))
    np.testing.assert_array_equal(public_subset(100, 0, 4, 2), np.arange(100))
    np.testing.assert_array_equal(public_subset(100, 500, 4, 2), np.arange(100))


@pytest.mark.usefixtures("task_identity")
def test_fedmd_consensus_is_the_plain_mean_of_the_valid_logits(tmp_path):
    cfg = _cfg("fedmd", **{"public-per-round": 2})
    server = fedmd.FedMD(str(tmp_path), 3, cfg, num_common=120, num_classes=C)
    server.node_ids = [900, 17, 55]
    a = np.zeros((2, C))
    a[0, 0], a[1, 3] = 6.0, -2.0
    b = np.full((2, C), 1.0)
    broken = np.full((2, C), 1.0)
    broken[1, 1] = np.nan
    target = server.target(1, [_upload(900, 2, broken, "logits"), _upload(17, 0, a, "logits"),
                               _upload(55, 1, b, "logits")])
    by_hand = np.full((2, C), 0.5)
    by_hand[0, 0], by_hand[1, 3] = 3.5, -0.5  # (6 + 1) / 2 and (-2 + 1) / 2; NaN left out
    np.testing.assert_allclose(target, by_hand)
    # probability uploads are not what FedMD averages: refused, and then too few are left
    with pytest.raises(RuntimeError, match="only 0 node"):
        server.target(1, [_upload(17, 0, np.full((2, C), 0.1), "probs"),
                          _upload(55, 1, np.full((2, C), 0.1), "probs")])


def test_fedmd_refuses_a_codec_that_cannot_carry_logits():
    with pytest.raises(ConfigError, match="codec=float32 or float16"):
        fedmd.check(_cfg("fedmd", codec="uint8"))


def _entropy(p):
    return -(p * np.log(p)).sum(1)


def test_era_by_hand_keeps_the_argmax_and_is_not_always_sharper():
    probs = np.array([[[0.6, 0.4]], [[0.2, 0.8]]])  # two nodes, one sample, two classes
    # mean (0.4, 0.6); / 0.1 -> (4, 6); softmax -> (1, e^2) / (1 + e^2): sharper than the mean
    np.testing.assert_allclose(ds_fl.entropy_reduction_average(probs, 0.1),
                               [[1 / (1 + np.e ** 2), np.e ** 2 / (1 + np.e ** 2)]], rtol=1e-5)
    np.testing.assert_allclose(ds_fl.entropy_reduction_average(probs, 1e4), [[0.5, 0.5]],
                               atol=1e-4)  # a high temperature flattens
    rng = np.random.default_rng(0)
    many = rng.dirichlet(np.ones(C), size=(5, 50))
    np.testing.assert_array_equal(ds_fl.entropy_reduction_average(many, 0.1).argmax(1),
                                  many.mean(0).argmax(1))  # the class order is kept
    # The limit, measured: a softmax of probabilities never gives a class zero mass, so an
    # average already confident on two of 10 classes comes out *flatter* at T = 0.1
    # (each of the 8 empty classes gets e^-5 of the top two's weight)
    peaked = np.zeros((1, 1, C))
    peaked[0, 0, :2] = 0.5
    era = ds_fl.entropy_reduction_average(peaked, 0.1)
    assert _entropy(era)[0] > _entropy(np.full((1, 2), 0.5))[0]
    np.testing.assert_allclose(era[0, 2:], np.exp(-5) / (2 + 8 * np.exp(-5)), rtol=1e-5)
    # near the uniform vector the first-order ratio of two classes goes from 1 + C*delta
    # to 1 + delta/T: sharper only for T < 1/C (at T = 1/C = 0.1, about as flat)
    flat = (1 / C + 0.01 * np.linspace(-1, 1, C))[None, None, :]
    h = _entropy(flat[0])[0]
    assert _entropy(ds_fl.entropy_reduction_average(flat, 0.05))[0] < h - 1e-3
    assert abs(_entropy(ds_fl.entropy_reduction_average(flat, 0.1))[0] - h) < 1e-4
    assert _entropy(ds_fl.entropy_reduction_average(flat, 0.2))[0] > h


@pytest.mark.usefixtures("task_identity")
def test_ds_fl_server_aggregates_valid_uploads_with_era(tmp_path):
    cfg = _cfg("ds-fl", **{"public-per-round": 3})
    server = ds_fl.DSFL(str(tmp_path), 3, cfg, num_common=120, num_classes=C)
    server.node_ids = [1, 2, 3]
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(C), size=(3, 3))
    negative = p[2].copy()
    negative[0, :2] = (-0.1, negative[0, 0] + negative[0, 1] + 0.1)
    target = server.target(2, [_upload(1, 0, p[0], "probs"), _upload(2, 1, p[1], "probs"),
                               _upload(3, 2, negative, "probs")])
    mean = (p[0] + p[1]) / 2
    by_hand = np.exp(mean / 0.1) / np.exp(mean / 0.1).sum(1, keepdims=True)
    np.testing.assert_allclose(target, by_hand, rtol=1e-5)


def _node(tmp_path, method, pid=0, **overrides):
    cfg = _cfg(method, **overrides)
    return Node(cfg, pid, cfg.num_nodes, str(tmp_path))


@pytest.mark.parametrize("method,kind", [("fedmd", "logits"), ("ds-fl", "probs")])
def test_a_node_answers_on_the_rounds_subset_then_digests_and_revisits(tmp_path, method, kind):
    steps = consensus.node_steps(kind, (fedmd if method == "fedmd" else ds_fl).digest)
    node = _node(tmp_path, method)
    steps[consensus.LOCAL](node, RecordDict())
    start = node.store.snapshot(0).load_model(node.new_model())
    at_round = replace(node, server_round=1)
    reply = steps[consensus.QUERY](at_round, RecordDict())
    idx = public_subset(120, 40, node.cfg.seed, 1)
    from flower_gd.codecs import decode_payload
    sent = decode_payload(reply, (40, C)).scores
    logits = infer(start, node.data.common_x[idx])
    np.testing.assert_allclose(sent, logits if kind == "logits" else
                               np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                               rtol=1e-4, atol=1e-5)
    # the digest sees this round's subset and the target as sent
    seen = {}
    real = (fedmd if method == "fedmd" else ds_fl).digest

    def spy(node_, model, x, target_):
        seen["x"], seen["target"] = x, target_
        return real(node_, model, x, target_)

    steps = consensus.node_steps(kind, spy)
    rng = np.random.default_rng(3)
    target = (rng.normal(0, 3, (40, C)) if kind == "logits"
              else rng.dirichlet(np.ones(C), 40)).astype(np.float32)
    metrics = steps[consensus.DIGEST](at_round, encode_payload(
        InferencePayload(target, 1, kind)))
    np.testing.assert_array_equal(seen["x"], node.data.common_x[idx])
    np.testing.assert_allclose(seen["target"], target, rtol=1e-6)
    assert np.isfinite(metrics["digest-loss"]) and np.isfinite(metrics["train-loss"])
    after = node.store.snapshot(1).load_model(node.new_model())
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(),
                                                      after.state_dict().values(), strict=True))
    # a malformed target is refused before any state changes
    bad = target.copy()
    bad[0, 0] = np.nan
    with pytest.raises(PayloadError):
        steps[consensus.DIGEST](replace(node, server_round=2),
                                encode_payload(InferencePayload(bad, 2, kind)))
    assert node.store.rounds() == [0, 1]


@pytest.mark.parametrize("method", ["fedmd", "ds-fl"])
def test_the_digest_alone_moves_the_model_toward_the_target(tmp_path, method):
    """revisit-epochs 0: what changes the model is the digest, and it goes the right way."""
    node = replace(_node(tmp_path, method, **{"revisit-epochs": 0}), server_round=1)
    model = node.new_model()
    x = node.data.common_x[:40]
    logits = infer(model, x)
    if method == "fedmd":
        target = logits + np.where(np.arange(C) == 3, 4.0, 0.0).astype(np.float32)
    else:
        target = np.full((40, C), 0.02, np.float32)
        target[:, 3] = 0.82

    def gap(m):
        if method == "fedmd":
            return float(np.abs(infer(m, x) - target).mean())
        return float(-(target * np.log(softmax(infer(m, x)))).sum(1).mean())

    before = gap(model)
    (fedmd if method == "fedmd" else ds_fl).digest(node, model, x, target)
    assert gap(model) < 0.75 * before


def test_fedmd_digests_with_the_authors_adam(tmp_path, monkeypatch):
    """FedMD's digest steps are Adam's at 1e-3 (the authors' code), not the run's SGD."""
    import flower_gd.training as training

    made = []
    real = training.torch.optim.Adam

    def adam(params, lr):
        made.append(lr)
        return real(params, lr=lr)

    monkeypatch.setattr(training.torch.optim, "Adam", adam)
    node = replace(_node(tmp_path, "fedmd"), server_round=1)
    model = node.new_model()
    x = node.data.common_x[:40]
    fedmd.digest(node, model, x, infer(model, x) + 1.0)
    assert made == [1e-3]
