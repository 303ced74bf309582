"""Paper Eq. 1 against hand-computed mixes."""

import numpy as np
import pytest

from flower_gd.distill import hard_labels, mix_inference_lists


def test_eq1_matches_hand_computed_example():
    # Prepare: node i has seen 3 exchanges, its peer 1.
    il_i = np.array([[0.6, 0.4], [0.1, 0.9]], dtype=np.float32)
    il_j = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    # Execute
    mixed = mix_inference_lists(il_i, 3, il_j, 1)
    # Assert: (IL_j * 1 + IL_i * 3) / 4, worked by hand
    expected = np.array([[(0.2 + 1.8) / 4, (0.8 + 1.2) / 4],
                         [(0.5 + 0.3) / 4, (0.5 + 2.7) / 4]])
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
    assert mixed.dtype == np.float32
    np.testing.assert_array_equal(hard_labels(mixed), [0, 1])


def test_eq1_with_equal_counters_is_the_mean_and_breaks_the_argmax_the_way_it_should():
    il_i = np.array([[0.9, 0.1, 0.0]], dtype=np.float32)
    il_j = np.array([[0.0, 0.3, 0.7]], dtype=np.float32)
    mixed = mix_inference_lists(il_i, 1, il_j, 1)
    np.testing.assert_allclose(mixed, [[0.45, 0.2, 0.35]], rtol=1e-6)
    assert hard_labels(mixed)[0] == 0


def test_counters_start_at_one_zero_is_refused():
    il = np.ones((2, 2), dtype=np.float32) / 2
    with pytest.raises(ValueError, match="counters must be >= 1"):
        mix_inference_lists(il, 0, il, 0)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        mix_inference_lists(np.zeros((2, 3)), 1, np.zeros((3, 3)), 1)


def test_dlad_adaptive_target_two_nodes_by_hand():
    from flower_gd.distill import adaptive_target

    # Prepare: two nodes, two common samples, two classes.
    probs = np.array([[[0.9, 0.1], [0.6, 0.4]],     # node A
                      [[0.2, 0.8], [0.3, 0.7]]])    # node B
    conf = np.array([[0.75, 0.1],                   # d_A(x1), d_A(x2)
                     [0.25, 0.3]])                  # d_B(x1), d_B(x2)
    # Execute
    target = adaptive_target(probs, conf)
    # Assert: x1: w = (0.75, 0.25) -> 0.75*[.9,.1] + 0.25*[.2,.8] = [0.725, 0.275]
    #         x2: w = (0.25, 0.75) -> 0.25*[.6,.4] + 0.75*[.3,.7] = [0.375, 0.625]
    np.testing.assert_allclose(target, [[0.725, 0.275], [0.375, 0.625]], rtol=1e-6)


def test_dlad_target_falls_back_to_equal_weights_when_no_node_is_confident():
    from flower_gd.distill import adaptive_target

    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    target = adaptive_target(probs, np.zeros((2, 1)))
    np.testing.assert_allclose(target, [[0.5, 0.5]])
    with pytest.raises(ValueError, match="do not match"):
        adaptive_target(probs, np.zeros((3, 1)))


def test_a_non_finite_confidence_counts_as_no_confidence_and_never_spreads():
    from flower_gd.distill import adaptive_target, density_ratio, weighted_mix

    probs = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.2, 0.8], [0.3, 0.7]]])
    conf = np.array([[np.nan, 0.1], [0.25, np.inf]])
    # a diverged discriminator's NaN or inf is d = 0: the other node's scores alone
    np.testing.assert_allclose(adaptive_target(probs, conf), [[0.2, 0.8], [0.6, 0.4]],
                               rtol=1e-6)
    w = density_ratio(np.array([np.nan, -np.inf, 0.5]))
    np.testing.assert_allclose(w, [1e-4 / (1 - 1e-4)] * 2 + [1.0])
    # gossip-adaptive's mix of those weights: finite belief and total weight
    belief, total = weighted_mix(probs[0], w[:2], [probs[1]], [np.ones(2)])
    assert np.isfinite(belief).all() and np.isfinite(total).all()


def test_the_dlad_weighting_and_dlads_target_are_one_mix():
    from flower_gd.distill import adaptive_target, weighted_mix

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 50))
    conf = rng.uniform(size=(3, 50))
    conf[:, :5] = 0.0  # no node confident: both average the nodes
    belief, total = weighted_mix(probs[0], conf[0], list(probs[1:]), list(conf[1:]))
    np.testing.assert_allclose(belief, adaptive_target(probs, conf), rtol=1e-6)
    np.testing.assert_allclose(total, conf.sum(axis=0))
