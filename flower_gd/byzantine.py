"""Byzantine peers: which nodes attack and what they send instead of their honest lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flower_gd.codecs import Codec

if TYPE_CHECKING:  # torch is imported where it is used: config.py imports this module
    import torch

# `byzantine-attack` values and what an attacking node sends in place of its scores:
#   flip       its list with the class axis reversed (class c reported as C-1-c): a node
#              whose labels were flipped; FedAvg's attacker trains on flipped labels
#   random     a random distribution per sample (Dirichlet(1)); FedAvg's: Gaussian weights
#   malformed  NaN everywhere, which every receiver must reject at decode
ATTACKS = ("flip", "random", "malformed")


def byzantine_partitions(seed: int, num_nodes: int, attackers: int) -> set[int]:
    """The `attackers` partitions (run-config `byzantine-nodes`) that attack, drawn once
    from the run's seed."""
    if not attackers:
        return set()
    rng = np.random.default_rng([seed, 0xB42])
    return {int(p) for p in rng.choice(num_nodes, attackers, replace=False)}


def corrupt_scores(scores: np.ndarray, attack: str, kind: str, seed: int) -> np.ndarray:
    """What an attacking node sends instead of `scores` (n_common, C)."""
    if attack == "flip":
        return np.ascontiguousarray(scores[:, ::-1])
    if attack == "random":
        rng = np.random.default_rng(seed)
        if kind == "logits":
            return rng.normal(0.0, float(scores.std()) or 1.0, scores.shape).astype(np.float32)
        return rng.dirichlet(np.ones(scores.shape[1]), size=scores.shape[0]).astype(np.float32)
    if attack == "malformed":
        return np.full(scores.shape, np.nan, dtype=np.float32)
    raise ValueError(f"byzantine-attack={attack!r}; choose one of {list(ATTACKS)}")


def attack_codec(codec: Codec, attack: str) -> Codec:
    """Malformed payloads go out as raw float32: quantizing codecs cannot even carry NaN."""
    return Codec("float32", compress=False) if attack == "malformed" else codec


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping for weight-sharing attackers (FedAvg): class c becomes C-1-c."""
    return (num_classes - 1 - y).astype(y.dtype)


def corrupt_arrays(state: dict[str, torch.Tensor], attack: str, seed: int
                    ) -> dict[str, torch.Tensor]:
    """A FedAvg attacker's update: Gaussian noise of each tensor's scale, or NaN."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
        elif attack == "malformed":
            out[name] = torch.full_like(tensor, float("nan"))
        else:
            scale = float(tensor.float().std()) if tensor.numel() > 1 else 1.0
            out[name] = torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype) * scale
    return out

