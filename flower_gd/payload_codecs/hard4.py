"""hard4: each sample's argmax label in 4 bits (C <= 16) and its weight or confidence in the
other 4 bits of the same byte; two labels a byte where the payload has neither.

Confidences go as round(15 d). Weights go as the nearest in log W of 15 levels spanning
LOG_WEIGHT_SPAN nats below the payload's largest weight (sent in the metadata as
`log-top`), 0 further below: push-sum then conserves weight mass only approximately, each
share off by up to a factor e^(+-0.29) and the lightest shares dropped.
"""

from __future__ import annotations

import numpy as np

from flower_gd.codecs import (
    Codec,
    Decoded,
    InferencePayload,
    Parts,
    PayloadCodec,
    PayloadError,
)

NIBBLE = 16
# 15 non-zero weight levels spanning LOG_WEIGHT_SPAN nats (e^8 ~ 2981)
LOG_WEIGHT_SPAN = 8.0
_WEIGHT_STEP = LOG_WEIGHT_SPAN / (NIBBLE - 2)
MAX_LOG_WEIGHT = float(np.log(1e30))
MIN_LOG_WEIGHT = -700.0  # exp() of less is 0 in float64: the smallest top log-weight
SIDES = ("weights", "confidence", "none")


def nibble_weights(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Weight levels 1-15, log-spaced over LOG_WEIGHT_SPAN nats up to the largest weight
    (nearest level in log W), 0 for weights further below (or 0); and that top log W."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("per-sample weights must be finite and >= 0")
    if not (w > 0).any():
        return np.zeros(len(w), np.uint8), 0.0
    log_w = np.log(np.maximum(w, 1e-300))
    top = max(float(log_w[w > 0].max()), MIN_LOG_WEIGHT)
    level = np.round((log_w - (top - LOG_WEIGHT_SPAN)) / _WEIGHT_STEP) + 1
    level[(w <= 0) | (level < 1)] = 0
    return np.minimum(level, NIBBLE - 1).astype(np.uint8), top


def unnibble_weights(level: np.ndarray, top: float) -> np.ndarray:
    """The weights the levels stand for (level 0: weight 0)."""
    level = level.astype(np.float64)
    return np.where(level > 0, np.exp(top - LOG_WEIGHT_SPAN + (level - 1) * _WEIGHT_STEP), 0.0)


def side_levels(payload: InferencePayload, meta: dict, codec: str) -> np.ndarray | None:
    """Each sample's 4-bit weight or confidence level (None without either); records `side`
    (and the weights' `log-top`) in `meta`."""
    num_classes = payload.scores.shape[1]
    if num_classes > NIBBLE and codec in ("hard4", "hard4p1"):
        raise ValueError(f"codec {codec} packs labels in 4 bits: {num_classes} classes > "
                         f"{NIBBLE}; use codec hard")
    if payload.confidence is not None and payload.sample_weights is not None:
        raise ValueError(f"codec {codec} carries one 4-bit value per sample: weights or "
                         "confidences, not both")
    if payload.sample_weights is not None:
        level, meta["log-top"] = nibble_weights(payload.sample_weights)
        meta["side"] = "weights"
        return level
    if payload.confidence is not None:
        conf = np.clip(np.asarray(payload.confidence, dtype=np.float64), 0, 1)
        meta["side"] = "confidence"
        return np.round(conf * (NIBBLE - 1)).astype(np.uint8)
    meta["side"] = "none"
    return None


def side(meta: dict, codec: str) -> str:
    value = meta.get("side")
    if value not in SIDES:
        raise PayloadError(f"{codec} side {value!r} unknown: weights, confidence or none")
    return str(value)


def log_top(meta: dict) -> float:
    top = meta.get("log-top")
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not \
            MIN_LOG_WEIGHT <= top <= MAX_LOG_WEIGHT:
        raise PayloadError(f"{meta.get('codec')} log-top {top!r} is not a log-weight in "
                           f"[{MIN_LOG_WEIGHT:.1f}, {MAX_LOG_WEIGHT:.1f}]")
    return float(top)


def side_values(level: np.ndarray | None, meta: dict
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(confidence, weights) from the side levels, by the metadata's `side`."""
    if level is None:
        return None, None
    if meta.get("side") == "confidence":  # a nibble: in [0, 1] by construction
        return level.astype(np.float32) / (NIBBLE - 1), None
    return None, unnibble_weights(level, log_top(meta))


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    labels = payload.scores.argmax(axis=1).astype(np.uint8)
    level = side_levels(payload, meta, codec.name)
    if level is None:
        padded = np.append(labels, np.uint8(0)) if len(labels) % 2 else labels
        return {"labels4": (padded[0::2] << 4 | padded[1::2]).astype(np.uint8)}
    return {"symbols": (labels << 4 | level).astype(np.uint8)}


def symbols(parts: Parts, meta: dict, n: int, c: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels (checked against `c` classes) and side levels (None where the payload has
    no side values)."""
    kind = side(meta, parts.codec)
    if kind == "none":
        raw = parts.take("labels4", np.uint8, ((n + 1) // 2,))
        if n % 2 and raw[-1] & (NIBBLE - 1):
            raise PayloadError(f"{parts.codec} labels4: the pad nibble after the last label "
                               "is not 0")
        labels, level = np.stack([raw >> 4, raw & (NIBBLE - 1)], axis=1).reshape(-1)[:n], None
    else:
        raw = parts.take("symbols", np.uint8, (n,))
        labels, level = raw >> 4, raw & (NIBBLE - 1)
    if (labels >= c).any():
        raise PayloadError(f"labels out of range [0, {c})")
    return labels.astype(np.int64), level


def weights(parts: Parts, meta: dict, shape: tuple[int, int]) -> np.ndarray:
    """The weights alone (their levels travel beside the labels)."""
    n = shape[0]
    kind = side(meta, parts.codec)
    if kind != "weights":
        raise PayloadError("payload lacks the weights this receiver needs")
    parts.only({"symbols", "top-bit"} if parts.codec == "hard4p1" else {"symbols"})
    raw = parts.take("symbols", np.uint8, (n,))
    return unnibble_weights(raw & (NIBBLE - 1), log_top(meta))


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    n, c = shape
    labels, level = symbols(parts, meta, n, c)
    return Decoded(np.eye(c, dtype=np.float32)[labels], *side_values(level, meta))


CODEC = PayloadCodec("hard4", encode, decode, weights, probabilities=True)
