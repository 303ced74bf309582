"""Distributed distillation's node steps: the neighbourhood average by hand, the joint loss."""

from dataclasses import replace

import numpy as np

from flower_gd.codecs import decode_payload, encode_payload
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.distill import public_subset
from flower_gd.node import Node
from flower_gd.training import OptimConfig, infer, softmax, train_regularized
from strategies import dist_distill

SMALL = {"method": "dist-distill", "num-nodes": 3, "local-epochs": 2, "common-limit": 120,
         "test-limit": 60, "public-per-round": 50, "partition-scheme": "niid1"}


def _node(tmp_path, pid, **overrides):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {**SMALL, **overrides}))
    return Node(cfg, pid, cfg.num_nodes, str(tmp_path))


def test_the_target_is_the_uniform_average_of_own_and_neighbours_by_hand():
    own = np.array([[0.7, 0.3]])
    peers = [np.array([[0.1, 0.9]]), np.array([[0.4, 0.6]])]
    np.testing.assert_allclose(dist_distill.neighbourhood_average(own, peers),
                               [[0.4, 0.6]])  # (0.7 + 0.1 + 0.4) / 3, (0.3 + 0.9 + 0.6) / 3


def test_a_step_distils_toward_the_average_of_the_pulled_batch(tmp_path, monkeypatch):
    a, b = _node(tmp_path, 0), _node(tmp_path, 1)
    dist_distill.local_phase(a)
    dist_distill.local_phase(b)
    idx = public_subset(120, 50, a.cfg.seed, 1)
    shared = dist_distill.share(replace(b, server_round=1))
    assert decode_payload(shared, (50, 10)).scores.shape == (50, 10)  # the batch, not all X_c
    seen = {}
    real = dist_distill.train_regularized

    def spy(model, x, y, x_ref, target, *args, **kwargs):
        seen["x_ref"], seen["target"] = x_ref, target
        return real(model, x, y, x_ref, target, *args, **kwargs)

    monkeypatch.setattr(dist_distill, "train_regularized", spy)
    metrics = dist_distill.distill_step(replace(a, server_round=1), shared)
    own = a.store.snapshot(0).array(dist_distill.LIST)[idx]
    theirs = b.store.snapshot(0).array(dist_distill.LIST)[idx]
    np.testing.assert_allclose(seen["target"], (own + theirs) / 2, rtol=1e-5)
    np.testing.assert_array_equal(seen["x_ref"], a.data.common_x[idx])
    assert metrics["peers"] == 1 and a.store.rounds() == [0, 1]
    # a NaN list is refused; the node keeps round 1 as its newest state
    bad = own.copy()
    bad[0, 0] = np.nan
    from flower_gd.codecs import InferencePayload
    refused = dist_distill.distill_step(replace(a, server_round=2),
                                        encode_payload(InferencePayload(bad, 2, "probs")))
    assert refused["peers"] == 0 and refused["payload-rejected"] == 1
    assert a.store.rounds() == [0, 1]


def test_the_distillation_term_pulls_the_reference_predictions_to_the_target(tmp_path):
    node = _node(tmp_path, 0)
    x, y = node.data.private(0)
    ref = node.data.common_x[:60]
    target = np.zeros((60, 10), np.float32)
    target[:, 7] = 1.0  # every reference sample is class 7
    opt = OptimConfig(0.05, 0.9, 0.0, 40)

    def share_of_seven(weight):
        model = node.new_model()
        train_regularized(model, x, y, ref, target, 3, opt, weight, seed=0)
        return float(softmax(infer(model, ref))[:, 7].mean())

    assert share_of_seven(5.0) > share_of_seven(0.0) + 0.3
