"""topk: each sample's k largest probabilities (run-config `codec-topk`) as uint8 class
index and uint8 value floor(255 p); the rest of the mass spread evenly over the other
classes on decode, never above the smallest kept value (the argmax stays a kept class)."""

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
    scores = payload.scores
    num_classes = scores.shape[1]
    k = min(codec.topk, num_classes)
    meta["topk"] = int(k)
    index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores.astype(np.float64), index, axis=1)
    return {"topk-index": index.astype(label_dtype(num_classes)),
            "topk-value": np.floor(np.clip(values, 0, 1) * 255).astype(np.uint8),
            **side_parts(payload, compact=True)}


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    n, c = shape
    k = meta.get("topk", 0)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= c:
        raise PayloadError(f"topk {k!r} out of range [1, {c}]")
    index = parts.take("topk-index", label_dtype(c), (n, k)).astype(np.int64)
    values = parts.take("topk-value", np.uint8, (n, k)).astype(np.float64) / 255.0
    if (index >= c).any():
        raise PayloadError(f"top-k class indices out of range [0, {c})")
    if k > 1 and (np.diff(np.sort(index, axis=1), axis=1) == 0).any():
        raise PayloadError("top-k class indices repeat within a row")
    kept = values.sum(axis=1)
    if (kept > 1.0 + 1e-9).any():
        raise PayloadError("top-k probabilities sum to more than 1")
    rest = (1.0 - kept) / (c - k) if c > k else np.zeros(n)
    # no class left out may outscore a kept one: the sender kept its k largest, and flooring
    # the kept values to 1/255 steps must not hand the argmax to a class it dropped
    rest = np.minimum(rest, values.min(axis=1, initial=1.0))
    scores = np.repeat(rest[:, None], c, axis=1)
    np.put_along_axis(scores, index, values, axis=1)
    total = scores.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise PayloadError(f"{int((total <= 0).sum())} top-k rows carry no probability at all")
    return Decoded((scores / np.where(total > 0, total, 1.0)).astype(np.float32),
                   *side_values(parts, n, compact=True))


CODEC = PayloadCodec("topk", encode, decode,
                     lambda parts, meta, shape: side_weights(parts, shape[0], compact=True),
                     probabilities=True)
