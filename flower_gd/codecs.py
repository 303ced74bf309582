"""Inference-list payloads: encode into Flower records, decode with validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

# Record keys. The meter classifies a message as `logits` when it carries PAYLOAD_KEY and as
# `weights` when it carries WEIGHTS_KEY, so these names are part of the metering contract.
PAYLOAD_KEY = "inference"
PAYLOAD_META_KEY = "inference-meta"
WEIGHTS_KEY = "arrays"
# Raw private samples: only the `central` bound sends them (tag `data`).
PRIVATE_DATA_KEY = "private-data"
MAX_COUNTER = 1_000_000
PROB_TOLERANCE = 1e-3


class PayloadError(ValueError):
    """A peer's payload failed validation; the receiver must keep its previous state."""


@dataclass(frozen=True)
class InferencePayload:
    """What a node shares: its inference list over X_c and its counter (paper: IL_j, C_j)."""

    scores: np.ndarray  # (n_common, C) float32
    counter: int
    kind: str  # "probs" or "logits"
    confidence: np.ndarray | None = None  # (n_common,) in [0, 1]: DLAD's d_i(x)


def encode_payload(payload: InferencePayload, content: RecordDict | None = None) -> RecordDict:
    """Put a payload into a RecordDict (float32, the paper's format)."""
    content = RecordDict() if content is None else content
    arrays = {"scores": Array(np.ascontiguousarray(payload.scores, dtype=np.float32))}
    if payload.confidence is not None:
        arrays["confidence"] = Array(np.ascontiguousarray(payload.confidence, dtype=np.float32))
    content[PAYLOAD_KEY] = ArrayRecord(arrays)
    content[PAYLOAD_META_KEY] = ConfigRecord({"counter": int(payload.counter),
                                              "kind": payload.kind, "codec": "float32"})
    return content


def decode_payload(content: RecordDict, expected_shape: tuple[int, int]) -> InferencePayload:
    """Read and validate a peer's payload.

    Raises
    ------
    PayloadError
        Missing records, wrong shape or dtype, NaN/inf, negative or non-normalised
        probabilities, or a counter out of range.
    """
    if PAYLOAD_KEY not in content.array_records or PAYLOAD_META_KEY not in content.config_records:
        raise PayloadError(f"payload lacks the '{PAYLOAD_KEY}' / '{PAYLOAD_META_KEY}' records")
    meta = content.config_records[PAYLOAD_META_KEY]
    arrays = content.array_records[PAYLOAD_KEY]
    if "scores" not in arrays:
        raise PayloadError("payload lacks the 'scores' array")
    if meta.get("codec") != "float32":
        raise PayloadError(f"unsupported codec {meta.get('codec')!r}")
    scores = arrays["scores"].numpy()
    if scores.dtype != np.float32:
        raise PayloadError(f"scores have dtype {scores.dtype}, expected float32")
    if tuple(scores.shape) != tuple(expected_shape):
        raise PayloadError(f"scores have shape {tuple(scores.shape)}, expected {expected_shape} "
                           "(n_common, classes): the peer runs on different common data?")
    if not np.isfinite(scores).all():
        raise PayloadError(f"scores hold {int((~np.isfinite(scores)).sum())} NaN/inf values")
    kind = meta.get("kind")
    if kind not in ("probs", "logits"):
        raise PayloadError(f"unknown score kind {kind!r}")
    if kind == "probs":
        if (scores < 0).any():
            raise PayloadError("probabilities are negative")
        worst = float(np.abs(scores.sum(axis=1) - 1.0).max())
        if worst > PROB_TOLERANCE:
            raise PayloadError(f"probability rows do not sum to 1 (off by up to {worst:.3g})")
    counter = meta.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_COUNTER:
        raise PayloadError(f"counter {counter!r} out of range [1, {MAX_COUNTER}]")
    confidence = None
    if "confidence" in arrays:
        confidence = arrays["confidence"].numpy()
        if confidence.shape != (expected_shape[0],):
            raise PayloadError(f"confidence has shape {confidence.shape}, expected "
                               f"({expected_shape[0]},)")
        if not np.isfinite(confidence).all() or (confidence < 0).any() or (confidence > 1).any():
            raise PayloadError("confidence values must be finite and in [0, 1]")
    return InferencePayload(scores=scores, counter=counter, kind=str(kind),
                            confidence=confidence)
