"""Distillation maths shared by the knowledge-sharing methods (pure numpy, no Flower)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flower_gd.config import RunConfig


def mix_inference_lists(il_own: np.ndarray, count_own: int, il_peer: np.ndarray,
                        count_peer: int) -> np.ndarray:
    """Count-weighted mix of two inference lists (paper Eq. 1).

    .. math:: L_{mix} = (IL_j C_j + IL_i C_i) / (C_j + C_i)

    Counters start at 1 (the reference code starts them at 0, which makes the first
    exchange 0/0).

    Parameters
    ----------
    il_own, il_peer : np.ndarray
        (n_common, C) class scores of this node and of the peer.
    count_own, count_peer : int
        Their counters, each >= 1.
    """
    if il_own.shape != il_peer.shape:
        raise ValueError(f"inference lists differ in shape: {il_own.shape} vs {il_peer.shape}")
    if count_own < 1 or count_peer < 1:
        raise ValueError(f"counters must be >= 1, got {count_own} and {count_peer}")
    total = count_own + count_peer
    return ((il_peer.astype(np.float64) * count_peer + il_own.astype(np.float64) * count_own)
            / total).astype(np.float32)


def hard_labels(scores: np.ndarray) -> np.ndarray:
    """Argmax class of every row: the pseudo-labels a gossip step trains on."""
    return scores.argmax(axis=1).astype(np.int64)


def finite_confidence(confidence: np.ndarray) -> np.ndarray:
    """Discriminator outputs as float64 in [0, 1]. A non-finite one, +inf included, comes
    from a diverged discriminator and is read as 0, on purpose: no claim that the sample
    looks like the node's data (a sigmoid never gives inf)."""
    conf = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0, posinf=0.0,
                         neginf=0.0)
    return np.clip(conf, 0.0, 1.0)


def normalised_mix(weights: np.ndarray, beliefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mix sum_m w_m(x) B_m(x) / sum_m w_m(x) of (m, n) weights and (m, n, C)
    beliefs, and the total weight per sample; where every weight is 0 (exactly: a positive
    total however small still weights) the beliefs are averaged. DLAD's target and
    gossip-adaptive's mix are both this one function, so the `dlad` weighting's limit is
    DLAD's target exactly."""
    w = weights.astype(np.float64)
    total = w.sum(axis=0)
    coef = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / len(w))
    return np.einsum("mn,mnc->nc", coef, beliefs.astype(np.float64)), total


def adaptive_target(probs: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """DLAD's per-sample adaptive distillation target.

    .. math:: y(x) = \\sum_i w_i(x)\\, p_i(x), \\qquad w_i(x) = d_i(x) / \\sum_j d_j(x)

    Parameters
    ----------
    probs : np.ndarray
        (nodes, n_common, C) softmax(f_i(x) / T) of every node.
    confidence : np.ndarray
        (nodes, n_common) discriminator outputs d_i(x) in [0, 1].

    Where every node has d_i(x) = 0 the nodes are weighted equally; a non-finite confidence
    counts as 0 (`finite_confidence`).
    """
    if probs.ndim != 3 or confidence.shape != probs.shape[:2]:
        raise ValueError(f"probs {probs.shape} and confidence {confidence.shape} do not match "
                         "as (nodes, n_common, C) and (nodes, n_common)")
    mixed, _ = normalised_mix(finite_confidence(confidence), probs)
    return mixed.astype(np.float32)


def density_ratio(confidence: np.ndarray, clip: float = 1e-4) -> np.ndarray:
    """Per-sample weight d / (1 - d) from a discriminator output d(x) in [0, 1].

    With the discriminator trained on balanced batches (private = 1, common = 0), d/(1-d)
    estimates p_private(x) / p_common(x): how typical x is of the node's own data. `d` is
    clipped to [clip, 1 - clip], so weights lie in [clip / (1 - clip), (1 - clip) / clip];
    a non-finite d counts as 0 (`finite_confidence`), the smallest weight.
    """
    d = np.clip(finite_confidence(confidence), clip, 1.0 - clip)
    return d / (1.0 - d)


def weighted_mix(belief: np.ndarray, weights: np.ndarray, peer_beliefs: list[np.ndarray],
                 peer_weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-sample weighted mix of a node's belief with its peers' (gossip-adaptive).

    .. math:: B_i(x) \leftarrow \frac{W_i(x) B_i(x) + \sum_j W_j(x) B_j(x)}
                                       {W_i(x) + \sum_j W_j(x)}, \qquad
              W_i(x) \leftarrow W_i(x) + \sum_j W_j(x)

    Parameters
    ----------
    belief : (n, C) class distribution per common sample; weights : (n,) >= 0.
    peer_beliefs, peer_weights : the same for each pulled peer.

    Returns the new (belief, weights); where every weight is 0 the beliefs are averaged.
    """
    beliefs = [belief] + list(peer_beliefs)
    ws = [weights] + list(peer_weights)
    for b, w in zip(beliefs, ws, strict=True):
        if b.shape != belief.shape or w.shape != belief.shape[:1]:
            raise ValueError(f"belief {b.shape} / weights {w.shape} do not match {belief.shape}")
    mixed, total = normalised_mix(np.stack(ws), np.stack(beliefs))
    return mixed.astype(np.float32), total


def clip_toward(own: np.ndarray, peer: np.ndarray, radius: float) -> np.ndarray:
    r"""Self-centered clipping of a peer's list, per sample (the robust mix, `robust-mix=clip`).

    He, Karimireddy & Jaggi, "Byzantine-robust decentralized learning via ClippedGossip"
    (2022): a node moves toward each peer by at most `radius`, so one attacker can shift a
    sample's scores by a bounded amount per round however it lies, while an honest peer that
    agrees closely passes unchanged:

    .. math:: \tilde{p}_j(x) = p_i(x) + \min\Big(1, \frac{\tau}{\lVert p_j(x) - p_i(x)
              \rVert_1}\Big)\,(p_j(x) - p_i(x))

    The result is a convex combination of the two rows, so probabilities stay probabilities.

    Parameters
    ----------
    own, peer : np.ndarray
        (n_common, C) this node's scores and the peer's.
    radius : float
        tau, the largest L1 distance kept (probabilities: at most 2).
    """
    if own.shape != peer.shape:
        raise ValueError(f"lists differ in shape: {own.shape} vs {peer.shape}")
    own64, diff = own.astype(np.float64), peer.astype(np.float64) - own.astype(np.float64)
    norm = np.abs(diff).sum(axis=1, keepdims=True)  # (n_common, 1)
    scale = np.minimum(1.0, radius / np.maximum(norm, 1e-12))
    return (own64 + scale * diff).astype(np.float32)


def public_subset(num_common: int, size: int, seed: int, server_round: int) -> np.ndarray:
    """Indices (sorted) of round `server_round`'s public subset: `size` samples of the
    common data drawn without replacement, fixed by (seed, round); size 0 or >= the
    common data: all of it."""
    if size <= 0 or size >= num_common:
        return np.arange(num_common)
    rng = np.random.default_rng([seed, server_round, 0x5EED])
    return np.sort(rng.choice(num_common, size=size, replace=False))


def round_subset(cfg: RunConfig, num_common: int, server_round: int) -> np.ndarray:
    """This run's (`public-per-round`, `seed`) subset for `server_round`."""
    return public_subset(num_common, cfg.public_per_round, cfg.seed, server_round)
