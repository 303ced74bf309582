"""uint8: probabilities as integers summing to exactly 255 per row (largest-remainder
rounding), one byte a class; weights as float16 log W, confidences as uint8 d * 255."""

from __future__ import annotations

import numpy as np

from flower_gd.codecs import (
    Codec,
    Decoded,
    InferencePayload,
    Parts,
    PayloadCodec,
    PayloadError,
    side_parts,
    side_values,
    side_weights,
)


def quantize_probs(probs: np.ndarray, total: int = 255) -> np.ndarray:
    """Integers per row summing to exactly `total` (largest-remainder rounding)."""
    scaled = np.clip(probs.astype(np.float64), 0.0, None)
    scaled[~(scaled.sum(axis=1) > 0)] = 1.0  # a row with no mass (or NaN) says: uniform
    scaled = scaled / scaled.sum(axis=1, keepdims=True) * total
    q = np.floor(scaled).astype(np.int64)
    deficit = total - q.sum(axis=1)  # in [0, C)
    rank = np.argsort(np.argsort(-(scaled - q), axis=1, kind="stable"), axis=1, kind="stable")
    q += rank < deficit[:, None]
    return q.astype(np.uint8 if total <= 255 else np.uint16)


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    return {"scores": quantize_probs(payload.scores), **side_parts(payload, compact=True)}


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    raw = parts.take("scores", np.uint8, shape)
    sums = raw.sum(axis=1, dtype=np.int64)
    if (sums != 255).any():
        raise PayloadError(f"uint8 probability rows must sum to 255; "
                           f"{int((sums != 255).sum())} rows do not")
    return Decoded(raw.astype(np.float32) / 255.0, *side_values(parts, shape[0], compact=True))


CODEC = PayloadCodec("uint8", encode, decode,
                     lambda parts, meta, shape: side_weights(parts, shape[0], compact=True),
                     probabilities=True)
