"""hard: each sample's argmax label, one byte (one-hot on decode); weights as float16 log W,
confidences as uint8 d * 255. The hard-label floor's reference point: log2(C) bits of
information a sample, before the side values."""

from __future__ import annotations

import numpy as np

from flower_gd.codecs import (
    Codec,
    Decoded,
    InferencePayload,
    Parts,
    PayloadCodec,
    PayloadError,
    label_dtype,
    side_parts,
    side_values,
    side_weights,
)


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    labels = payload.scores.argmax(axis=1).astype(label_dtype(payload.scores.shape[1]))
    return {"labels": labels, **side_parts(payload, compact=True)}


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    n, c = shape
    labels = parts.take("labels", label_dtype(c), (n,)).astype(np.int64)
    if (labels >= c).any():
        raise PayloadError(f"labels out of range [0, {c})")
    return Decoded(np.eye(c, dtype=np.float32)[labels], *side_values(parts, n, compact=True))


CODEC = PayloadCodec("hard", encode, decode,
                     lambda parts, meta, shape: side_weights(parts, shape[0], compact=True),
                     probabilities=True)
