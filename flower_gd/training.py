"""Training, inference and evaluation loops on in-memory numpy arrays."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flower_gd.config import RunConfig


@dataclass(frozen=True)
class OptimConfig:
    """SGD settings shared by every method (the paper uses SGD, batch 40)."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    min_epoch_steps: int = 1  # an epoch is at least this many steps (passes repeat)
    grad_clip: float = 0.0  # largest gradient norm a step applies (0: no limit)

    @classmethod
    def of(cls, cfg: RunConfig) -> OptimConfig:
        """The run config's `lr`, `momentum`, `weight-decay`, `batch-size`,
        `min-epoch-steps` and `grad-clip`."""
        return cls(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.min_epoch_steps,
                   cfg.grad_clip)


@dataclass
class RefusedSteps:
    """Optimiser steps refused because the loss or the gradient was NaN or infinite."""

    count: int = 0


_REFUSED: contextvars.ContextVar[RefusedSteps | None] = contextvars.ContextVar(
    "refused_steps", default=None)


@contextlib.contextmanager
def refused_steps() -> Iterator[RefusedSteps]:
    """Count the steps every training loop inside the block refuses (see `_fit`)."""
    counter = RefusedSteps()
    token = _REFUSED.set(counter)
    try:
        yield counter
    finally:
        _REFUSED.reset(token)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _epoch_batches(n: int, opt: OptimConfig, rng: np.random.Generator):
    """One epoch's batches: passes over n samples until `opt.min_epoch_steps` batches of
    two or more samples (the ones `_fit` trains on) have been given."""
    given = 0
    while True:
        for idx in _batches(n, opt.batch_size, rng):
            given += int(len(idx) >= 2 or n < 2)
            yield idx
        if given >= opt.min_epoch_steps or given == 0:
            return


def _fit(model: nn.Module, x: np.ndarray, targets: np.ndarray, epochs: int, opt: OptimConfig,
         seed: int, loss_fn, sgd: torch.optim.Optimizer | None = None,
         recalibrate: bool = True) -> float:
    """Run `epochs` of SGD; returns the mean loss of the last epoch's accepted steps.

    A step whose loss or gradient is NaN or infinite is refused: the parameters (and the
    optimiser's momentum) stay as they were, and the refusal is counted (`refused_steps`).
    A model that diverges therefore keeps its last finite state instead of turning to NaN.

    An epoch is one pass over `x` in a fresh order, repeated until it has taken at least
    `opt.min_epoch_steps` steps: on a tiny private set (a few dozen images, one batch) an
    epoch would otherwise be a single step.

    At the end (unless `recalibrate` is False: a caller that trains on) BatchNorm statistics
    are re-estimated on the training samples under the final weights (`recalibrate_batchnorm`).
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # a model's own randomness (dropout) follows the call's seed
    if sgd is None:
        sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                              weight_decay=opt.weight_decay)
    xt, tt = torch.from_numpy(x), torch.from_numpy(targets)
    model.train()
    last = 0.0
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in _epoch_batches(len(x), opt, rng):
            if len(idx) < 2 and len(x) >= 2:  # BatchNorm cannot train on a batch of one
                continue
            it = torch.from_numpy(idx)
            sgd.zero_grad(set_to_none=True)
            value = _step(model, sgd, loss_fn(model(xt[it]), tt[it]), opt.grad_clip)
            if value is None:
                continue
            total += value * len(idx)
            count += len(idx)
        last = total / count if count else float("nan")
    if recalibrate:
        _recalibrate_on(model, xt, rng, opt.batch_size)
    return last


def _recalibrate_on(model: nn.Module, x: torch.Tensor, rng: np.random.Generator,
                    batch_size: int) -> None:
    """`recalibrate_batchnorm` on at most BN_SAMPLES of `x`, drawn by `rng` (nothing is
    drawn for a model without BatchNorm)."""
    if _batchnorm_layers(model):  # its statistics lag the weights: re-estimate them
        subset = torch.from_numpy(rng.permutation(len(x))[:BN_SAMPLES])
        recalibrate_batchnorm(model, x[subset], batch_size)


# Precise BatchNorm: at most this many of the training samples re-estimate the statistics.
BN_SAMPLES = 2000


def _batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Re-estimate every BatchNorm layer's running statistics on `x` under the final weights
    ("precise BatchNorm", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").

    During training the running mean and variance are exponential averages over batches
    seen under older weights. torchvision's MobileNetV3 keeps 1% of each new batch
    (momentum 0.01): its statistics average over the last few hundred steps while the weights
    move under them, and before this re-estimate every MobileNetV3-small node of a
    Fashion-MNIST fleet collapsed in eval mode (near chance, one class for most images).
    Here each layer's statistics become the average over `x` in batches of `batch_size`,
    the other layers in eval mode (no dropout). The learned parameters do not change; a
    model without BatchNorm is left exactly as it was.
    """
    layers = _batchnorm_layers(model)
    if not layers or len(x) < 2:
        return
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    step = max(batch_size, 2)
    for start in range(0, len(x), step):
        batch = x[start:start + step]
        if len(batch) >= 2:  # one sample has no batch variance
            model(batch)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def _step(model: nn.Module, sgd: torch.optim.Optimizer, loss: torch.Tensor,
          grad_clip: float) -> float | None:
    """Back-propagate `loss`, rescale the gradient to norm `grad_clip` if it is longer
    (0: never), and step; unless the loss or the gradient is NaN or infinite: then nothing
    changes, the refusal is counted (`refused_steps`) and None is returned."""
    value = float(loss.detach())
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([g for g in (p.grad for p in params) if g is not None])
    if not (np.isfinite(value) and torch.isfinite(norm)):
        refused = _REFUSED.get()
        if refused is not None:
            refused.count += 1
        return None
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    sgd.step()
    return value


def train_hard(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, opt: OptimConfig,
               seed: int = 0) -> float:
    """Cross-entropy training on hard labels `y` (n,) int64."""
    return _fit(model, x, y.astype(np.int64), epochs, opt, seed, F.cross_entropy)


def train_soft(model: nn.Module, x: np.ndarray, target_probs: np.ndarray, epochs: int,
               opt: OptimConfig, temperature: float = 1.0, seed: int = 0) -> float:
    """Soft-label distillation: tau^2 KL(target || softmax(student / tau)) (Hinton et al.).

    `target_probs` (n, C) are already at temperature tau; with no ground truth on the common
    data the hard-label term has weight zero (lambda = 1).
    """
    def kd(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits / temperature, dim=1)
        return F.kl_div(log_p, target, reduction="batchmean") * temperature ** 2

    return _fit(model, x, target_probs.astype(np.float32), epochs, opt, seed, kd)


def train_logit_l1(model: nn.Module, x: np.ndarray, target_logits: np.ndarray, epochs: int,
                   opt: OptimConfig, seed: int = 0, adam_lr: float | None = None) -> float:
    """Regression of the model's logits onto `target_logits` (n, C) with the mean absolute
    error (FedMD's digest: its public code fits the consensus logits with an L1 loss).

    With `adam_lr`, the steps are Adam's at that rate (as the FedMD authors trained) instead
    of SGD at `opt.lr`."""
    optimizer = (torch.optim.Adam(model.parameters(), lr=adam_lr) if adam_lr is not None
                 else None)
    return _fit(model, x, target_logits.astype(np.float32), epochs, opt, seed, F.l1_loss,
                optimizer)


def train_regularized(model: nn.Module, x: np.ndarray, y: np.ndarray, x_ref: np.ndarray,
                      target_ref: np.ndarray, epochs: int, opt: OptimConfig, weight: float,
                      seed: int = 0) -> float:
    """Cross-entropy on labelled (x, y) plus `weight` x KL(target || softmax(model)) on the
    reference samples, in one objective: each step takes a private batch and a reference
    batch (distributed distillation's distillation-regularized loss).

    An epoch passes once over the reference set in a fresh order (every received score is
    used) and at least once over the private data (`_epoch_batches`); the shorter of the
    two is cycled. Refusals as in `train_hard`; returns the mean total loss of the last
    epoch's accepted steps.
    """
    if len(x) == 0 or len(x_ref) == 0:
        raise ValueError("cannot train on an empty private or reference set")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # a model's own randomness (dropout) follows the call's seed
    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                          weight_decay=opt.weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    rt, tt = torch.from_numpy(x_ref), torch.from_numpy(target_ref.astype(np.float32))
    model.train()
    last = 0.0
    for _ in range(epochs):
        private = [b for b in _epoch_batches(len(x), opt, rng) if len(b) >= 2 or len(x) < 2]
        reference = [b for b in _batches(len(x_ref), opt.batch_size, rng)
                     if len(b) >= 2 or len(x_ref) < 2]
        total, count = 0.0, 0
        for step in range(max(len(private), len(reference))):
            idx = torch.from_numpy(private[step % len(private)])
            ref = torch.from_numpy(reference[step % len(reference)])
            sgd.zero_grad(set_to_none=True)
            out = model(torch.cat([xt[idx], rt[ref]]))
            loss = (F.cross_entropy(out[:len(idx)], yt[idx]) + weight * F.kl_div(
                F.log_softmax(out[len(idx):], dim=1), tt[ref], reduction="batchmean"))
            value = _step(model, sgd, loss, opt.grad_clip)
            if value is None:
                continue
            total += value * len(idx)
            count += len(idx)
        last = total / count if count else float("nan")
    _recalibrate_on(model, torch.cat([xt, rt]), rng, opt.batch_size)  # it trained on both
    return last


def train_discriminator(model: nn.Module, x_pos: np.ndarray, x_neg: np.ndarray, epochs: int,
                        opt: OptimConfig, seed: int = 0) -> float:
    """Binary classifier: `x_pos` (label 1) against `x_neg` (label 0), one logit output.

    Every epoch uses all positives and an equal-sized fresh sample of negatives, so the much
    larger common data does not swamp a node's private data.
    """
    rng = np.random.default_rng(seed)
    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                          weight_decay=opt.weight_decay)
    last = 0.0
    for epoch in range(epochs):
        neg = x_neg[rng.choice(len(x_neg), size=min(len(x_pos), len(x_neg)), replace=False)]
        x = np.concatenate([x_pos, neg])
        y = np.concatenate([np.ones(len(x_pos)), np.zeros(len(neg))]).astype(np.float32)
        last = _fit(model, x, y, 1, opt, seed + epoch,
                    lambda out, t: F.binary_cross_entropy_with_logits(out[:, 0], t), sgd,
                    recalibrate=epoch == epochs - 1)  # training uses batch statistics
    return last


@torch.no_grad()
def infer(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Raw outputs (logits) of the model on `x`: float32 (n, C). Batches of 256: on one CPU
    thread the small CNN infers 7000 Fashion-MNIST images in about 0.31 s at 256 against
    0.54 s at 1000, cnn-wide 0.81 s against 1.52 (a batch's activations stay in cache;
    measured on the project's 2-core machine, 2026-12-07)."""
    model.eval()
    xt = torch.from_numpy(x)
    outs = [model(xt[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).float().numpy()


@overload
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]: ...
@overload
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, top_share: Literal[True]
             ) -> tuple[float, float, float]: ...
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, top_share: bool = False
             ) -> tuple[float, ...]:
    """Accuracy and mean cross-entropy loss on a labelled set; with `top_share`, also the
    share of `x` given the most frequent predicted class."""
    logits = torch.from_numpy(infer(model, x))
    yt = torch.from_numpy(y.astype(np.int64))
    loss = float(F.cross_entropy(logits, yt))
    pred = logits.argmax(1)
    acc = float((pred == yt).float().mean())
    if not top_share:
        return acc, loss
    return acc, loss, float(torch.bincount(pred).max()) / max(len(pred), 1)


def held_out_metrics(model: nn.Module, test: tuple[np.ndarray, np.ndarray],
                     val: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Accuracy and loss on the test set and on the validation set, and the share of the
    validation set given the model's most frequent answer (`top-share`, near 1 for a model
    that collapsed onto one class). No validation set: test metrics only."""
    acc, loss = evaluate(model, *test)
    out = {"accuracy": acc, "loss": loss}
    if len(val[1]):
        val_acc, val_loss, top_share = evaluate(model, *val, top_share=True)
        out.update({"val-accuracy": val_acc, "val-loss": val_loss, "top-share": top_share})
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float32, stable for large magnitudes."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))).astype(np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
