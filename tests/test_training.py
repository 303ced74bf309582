"""The distillation loss against a hand computation: tau^2 KL(target || student at tau)."""

import numpy as np
import pytest
import torch
from torch import nn

from flower_gd.training import OptimConfig, train_soft

X = np.array([[1.0, 0.0], [0.5, -1.0]], dtype=np.float32)  # two samples, two features
W = np.array([[2.0, -1.0], [0.0, 1.0], [-1.0, 0.5]])  # three classes x two features
TARGET = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)


def _linear() -> nn.Module:
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W, dtype=torch.float32))
    return model


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_the_loss_is_tau_squared_kl_of_target_to_student(tau):
    student = _softmax(X @ W.T / tau)
    by_hand = tau**2 * np.mean(np.sum(TARGET * (np.log(TARGET) - np.log(student)), axis=1))
    wrong_way = tau**2 * np.mean(np.sum(student * (np.log(student) - np.log(TARGET)), axis=1))
    assert abs(by_hand - wrong_way) > 1e-3  # the two directions differ on this example
    loss = train_soft(_linear(), X, TARGET, 1, OptimConfig(0.0, 0.0, 0.0, 2), tau)
    assert loss == pytest.approx(by_hand, rel=1e-5)


def test_one_step_moves_the_weights_by_the_hand_computed_gradient():
    tau, lr = 2.0, 0.5
    model = _linear()
    train_soft(model, X, TARGET, 1, OptimConfig(lr, 0.0, 0.0, 2), tau)
    # d/dz of tau^2 KL(t || softmax(z / tau)) is tau (softmax(z / tau) - t); batch mean
    grad_z = tau * (_softmax(X @ W.T / tau) - TARGET) / len(X)
    expected = W - lr * grad_z.T @ X
    np.testing.assert_allclose(model.weight.detach().numpy(), expected, rtol=1e-5)


def test_a_nan_step_is_refused_and_counted_and_the_model_keeps_its_state():
    from flower_gd.training import refused_steps, train_hard

    model = _linear()
    x = np.array([[1.0, 0.0], [np.nan, 1.0]], dtype=np.float32)  # one batch, NaN loss
    y = np.array([0, 1])
    opt = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=2)
    with refused_steps() as refused:
        loss = train_hard(model, x, y, epochs=3, opt=opt)
    assert refused.count == 3 and np.isnan(loss)  # every step refused: no accepted loss
    np.testing.assert_array_equal(model.weight.detach().numpy(), W.astype(np.float32))
    with refused_steps() as refused:  # finite data: nothing refused, the weights move
        train_hard(model, X, np.array([0, 2]), epochs=1, opt=opt)
    assert refused.count == 0
    assert not np.array_equal(model.weight.detach().numpy(), W.astype(np.float32))


def test_an_infinite_gradient_is_refused_too():
    from flower_gd.training import refused_steps, train_soft

    model = _linear()
    big = np.array([[3e38, 3e38], [0.5, -1.0]], dtype=np.float32)  # overflows in the graph
    opt = OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=2)
    with refused_steps() as refused:
        train_soft(model, big, TARGET, epochs=1, opt=opt)
    assert refused.count == 1
    assert np.isfinite(model.weight.detach().numpy()).all()


def test_grad_clip_bounds_each_step_and_zero_leaves_it_alone():
    """One plain SGD step moves the parameters by lr x the gradient, rescaled so that the
    norm over *all* parameters is `grad_clip` when longer: a node whose loss surface is
    steep cannot blow up in a step (what made a Fashion-MNIST niid1 node's weights reach
    2e16 at lr 0.05 before). The regularised loop clips the same way."""
    from flower_gd.training import train_hard, train_regularized

    x = np.array([[100.0, -100.0], [-100.0, 100.0]], dtype=np.float32)  # a long gradient
    y = np.array([2, 1])

    def moved(clip, loop=train_hard):
        torch.manual_seed(0)
        model = nn.Linear(2, 3)  # weight and bias: the norm is the total over both
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=2,
                          grad_clip=clip)
        if loop is train_hard:
            train_hard(model, x, y, epochs=1, opt=opt)
        else:
            train_regularized(model, x, y, x, np.full((2, 3), 1 / 3, np.float32), 1, opt, 1.0)
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((end - start).norm())

    assert moved(0.0) > 5.0  # unclipped: the gradient's norm is in the hundreds
    np.testing.assert_allclose(moved(5.0), 0.1 * 5.0, rtol=1e-4)  # exactly lr x clip
    assert moved(1e9) == pytest.approx(moved(0.0), rel=1e-6)  # a loose bound changes nothing
    assert moved(0.0, train_regularized) > 5.0
    np.testing.assert_allclose(moved(5.0, train_regularized), 0.1 * 5.0, rtol=1e-4)


def test_the_regularised_loop_uses_every_reference_sample_each_epoch():
    """Distributed distillation receives scores for the whole reference batch: an epoch
    passes over all of it, cycling the (smaller) private set."""
    from flower_gd.training import train_regularized

    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 3)

        def forward(self, v):
            seen.append(v[:, 0].detach().clone())
            return self.lin(v)

    x = np.arange(4, dtype=np.float32)[:, None]  # private: 0..3
    ref = (100 + np.arange(30, dtype=np.float32))[:, None]  # reference: 100..129
    opt = OptimConfig(lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=4)
    train_regularized(Spy(), x, np.array([0, 1, 2, 0]), ref,
                      np.full((30, 3), 1 / 3, np.float32), 1, opt, 1.0)
    used = torch.cat(seen)
    assert set(used[used >= 100].int().tolist()) == set(range(100, 130))
    assert set(used[used < 100].int().tolist()) == {0, 1, 2, 3}
