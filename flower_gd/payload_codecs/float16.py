"""float16: scores as float16 (2 bytes a class), weights as float16 log W, confidences as
uint8 d * 255. Probabilities are renormalised after decoding (float16 rounding)."""

from __future__ import annotations

import numpy as np

from flower_gd.codecs import (
    Codec,
    Decoded,
    InferencePayload,
    Parts,
    PayloadCodec,
    PayloadError,
    check_probs,
    side_parts,
    side_values,
    side_weights,
)

TOLERANCE = 1e-2  # how far from 1 a float16 row may sum before it is renormalised


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    return {"scores": payload.scores.astype(np.float16), **side_parts(payload, compact=True)}


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    scores = parts.take("scores", np.float16, shape).astype(np.float32)
    if not np.isfinite(scores).all():
        raise PayloadError(f"scores hold {int((~np.isfinite(scores)).sum())} NaN/inf values")
    if kind == "probs":
        check_probs(scores, TOLERANCE)
        if len(scores):
            scores = scores / scores.sum(axis=1, keepdims=True)
    return Decoded(scores, *side_values(parts, shape[0], compact=True))


CODEC = PayloadCodec("float16", encode, decode,
                     lambda parts, meta, shape: side_weights(parts, shape[0], compact=True),
                     probabilities=False)
