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
