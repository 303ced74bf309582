"""hard4p1: hard4, and one bit per sample choosing one of two top-class probabilities (the
payload's two-level Lloyd-Max codebook, sent in the metadata as `top-levels`); the rest of a
sample's mass is spread evenly over the other classes on decode."""

from __future__ import annotations

import numpy as np

import flower_gd.payload_codecs.hard4 as hard4
from flower_gd.codecs import (
    Codec,
    Decoded,
    InferencePayload,
    Parts,
    PayloadCodec,
    PayloadError,
)
from flower_gd.payload_codecs.hard4 import NIBBLE


def top_floor(num_classes: int) -> float:
    """The smallest top-class probability sent: one sixteenth of the way from uniform (1/C)
    to 1, so that the sent label stays the decoded argmax by a clear margin."""
    return 1.0 / num_classes + (1.0 - 1.0 / num_classes) / NIBBLE


def top_levels(top: np.ndarray, floor: float, iterations: int = 50) -> np.ndarray:
    """The two-level Lloyd-Max codebook (lower, upper) of top-class probabilities `top`: the
    two values, each in [floor, 1], that minimise the squared error of sending each
    probability as the nearer of them (Lloyd's iteration from the quartiles; each value is
    its cell's mean held within [floor, 1], and the cells are those of the values actually
    sent). `top` comes from `finite_tops`."""
    p = np.asarray(top, dtype=np.float64)
    if len(p) == 0:
        return np.array([floor, floor])
    levels = np.clip(np.quantile(p, [0.25, 0.75]), floor, 1.0)
    for _ in range(iterations):
        upper = p > levels.mean()
        new = np.array([p[~upper].mean() if (~upper).any() else levels[0],
                        p[upper].mean() if upper.any() else levels[1]])
        new = np.clip(new, floor, 1.0)
        if np.array_equal(new, levels):
            break
        levels = new
    return levels


def finite_tops(scores: np.ndarray) -> np.ndarray:
    """Each sample's top-class probability in [0, 1]; a row that is not finite counts as 0
    (it is sent at the codebook's floor)."""
    top = np.asarray(scores, dtype=np.float64).max(axis=1) if len(scores) else np.zeros(0)
    return np.clip(np.where(np.isfinite(top), top, 0.0), 0.0, 1.0)


def top_bits(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The extra bit per sample (packed, 8 samples a byte, first sample in the high bit): 1
    where the sample's top-class probability is nearer the codebook's upper value; and the
    codebook (`top_levels`)."""
    top = finite_tops(scores)
    levels = top_levels(top, top_floor(scores.shape[1]))
    return np.packbits(top > levels.mean()), levels


def with_top(top: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Rows with `top` on the label and the rest spread evenly (float64)."""
    out = np.repeat(((1.0 - top) / max(c - 1, 1))[:, None], c, axis=1)
    out[np.arange(len(top)), labels] = top
    return out


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    parts = hard4.encode(payload, codec, meta)
    parts["top-bit"], levels = top_bits(payload.scores)
    meta["top-levels"] = [float(v) for v in levels]
    return parts


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    n, c = shape
    labels, level = hard4.symbols(parts, meta, n, c)
    levels = meta.get("top-levels")
    floor = top_floor(c)
    if not (isinstance(levels, list) and len(levels) == 2
            and all(isinstance(v, float) and floor - 1e-12 <= v <= 1.0 for v in levels)):
        raise PayloadError(f"hard4p1 top-levels {levels!r} are not two probabilities in "
                           f"[{floor:.4f}, 1] (the smallest a top class may have)")
    packed = parts.take("top-bit", np.uint8, ((n + 7) // 8,))
    if n % 8 and packed[-1] & ((1 << (8 - n % 8)) - 1):
        raise PayloadError("hard4p1 top-bit: the pad bits after the last sample are not 0")
    top = np.asarray(levels, dtype=np.float64)[np.unpackbits(packed)[:n]]
    return Decoded(with_top(top, labels, c).astype(np.float32), *hard4.side_values(level, meta))


CODEC = PayloadCodec("hard4p1", encode, decode, hard4.weights, probabilities=True)
