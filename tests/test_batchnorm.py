"""Precise BatchNorm: after training, a model's BatchNorm statistics describe its final
weights on the data it trained on, not an average over older weights."""

import copy

import numpy as np
import torch
from torch import nn

from flower_gd import training
from flower_gd.models import build_model
from flower_gd.training import (
    OptimConfig,
    recalibrate_batchnorm,
    train_discriminator,
    train_hard,
    train_regularized,
)

OPT = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=8)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 4)) * 3 + 5).astype(np.float32)  # far from BN's initial 0 / 1
    return x, (x[:, 0] > 5).astype(np.int64)


def _bn_model(momentum=0.01):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=momentum), nn.ReLU(),
                         nn.Linear(6, 2))


def test_training_leaves_the_statistics_of_the_final_weights_on_the_training_data():
    x, y = _data()
    model = _bn_model()
    train_hard(model, x, y, epochs=3, opt=OPT)
    with torch.no_grad():
        h = model[0](torch.from_numpy(x))  # what the BatchNorm layer sees, final weights
    bn = model[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), h.mean(0).numpy(), rtol=1e-4, atol=1e-4)
    # a cumulative average of unbiased per-batch variances: close to the population's
    np.testing.assert_allclose(bn.running_var.numpy(), h.var(0).numpy(), rtol=0.25)
    assert bn.momentum == 0.01  # the layer's own momentum is back for later training
    assert model.training


def test_without_recalibration_momentum_0_01_would_leave_the_initial_statistics():
    """The failure recalibration fixes (MobileNetV3's BatchNorm momentum is 0.01)."""
    x, _ = _data()
    model = _bn_model()
    model.train()
    with torch.no_grad():
        for start in range(0, len(x), 8):
            model(torch.from_numpy(x[start:start + 8]))
        h = model[0](torch.from_numpy(x)).mean(0)
    assert (model[1].running_mean - h).abs().min() > 0.5 * h.abs().min()


def test_a_model_without_batchnorm_is_left_exactly_as_it_was():
    x, _ = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    before = copy.deepcopy(model.state_dict())
    recalibrate_batchnorm(model, torch.from_numpy(x), 8)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_learned_parameters_are_untouched_and_dropout_is_off_while_estimating():
    x, _ = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.9), nn.BatchNorm1d(6), nn.Linear(6, 2))
    params = {k: v.clone() for k, v in model.named_parameters()}
    recalibrate_batchnorm(model, torch.from_numpy(x), 8)
    assert all(torch.equal(params[k], v) for k, v in model.named_parameters())
    # with dropout active (90% of the inputs zeroed, the rest x10) the mean would be far off
    with torch.no_grad():
        h = model[0](torch.from_numpy(x))
    np.testing.assert_allclose(model[2].running_mean.numpy(), h.mean(0).numpy(), rtol=1e-4,
                               atol=1e-4)


def test_a_mobilenet_node_is_not_left_with_its_initial_statistics():
    """MobileNetV3-small (small-image stem) after a short local phase: its first BatchNorm
    layer's running mean is the mean of what that layer sees under the final weights."""
    x = np.random.default_rng(0).random((48, 1, 28, 28), dtype=np.float32)
    y = np.arange(48) % 10
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 1, 10)
    train_hard(model, x, y, epochs=1, opt=OptimConfig(0.01, 0.9, 0.0, 16))
    stem = model.get_submodule("features.0")
    with torch.no_grad():
        model.eval()
        h = stem[0](torch.from_numpy(x)).mean((0, 2, 3))
    np.testing.assert_allclose(stem[1].running_mean.numpy(), h.numpy(), rtol=1e-3, atol=1e-4)


def test_distributed_distillations_loop_reestimates_on_what_it_trained_on():
    """train_regularized steps on private and reference samples together: its statistics
    are those of both under the final weights."""
    x, y = _data(32)
    x_ref, _ = _data(48, seed=1)
    x_ref = x_ref - 4  # a reference set with another mean than the private one
    target = np.full((48, 2), 0.5, dtype=np.float32)
    model = _bn_model()
    train_regularized(model, x, y, x_ref, target, epochs=2, opt=OPT, weight=1.0)
    with torch.no_grad():
        h = model[0](torch.from_numpy(np.concatenate([x, x_ref])))
    np.testing.assert_allclose(model[1].running_mean.numpy(), h.mean(0).numpy(), rtol=1e-4,
                               atol=1e-4)


def test_the_discriminator_is_reestimated_once_after_its_last_epoch(monkeypatch):
    calls = []
    real = training.recalibrate_batchnorm
    monkeypatch.setattr(training, "recalibrate_batchnorm",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    x, _ = _data()
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=0.01), nn.ReLU(),
                         nn.Linear(6, 1))
    train_discriminator(disc, x[:32], x[32:], epochs=3, opt=OPT)
    assert len(calls) == 1
    # and its statistics are those of its last epoch's samples: positives and negatives
    with torch.no_grad():
        h = disc[0](torch.from_numpy(x))
    np.testing.assert_allclose(disc[1].running_mean.numpy(), h.mean(0).numpy(), rtol=1e-4,
                               atol=1e-4)
