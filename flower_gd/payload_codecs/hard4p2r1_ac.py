"""hard4p2r1-ac: a sample's label, its 4-bit weight or confidence level, one of four
top-class probabilities, and its runner-up label where it is least sure, arithmetic-coded.

Per sample i with scores p_i (C classes, C >= 6):

- the label l_i = argmax p_i;
- the side level, where the payload has one: a weight as the nearest in log W of 11 levels
  spanning hard4's 8 nats below the payload's largest weight (0.8 nats apart, 0 further
  below; hard4 has 15, 0.57 apart: the coarser levels cost push-sum a share error of up to
  e^(+-0.4) and save about a third of a bit a sample, measured by `make bench-replay`'s
  replay on Fashion-MNIST niid1 and niid4), a confidence as round(15 d);
- the top level k_i in {0, 1, 2, 3}: which of the payload's four-level Lloyd-Max codebook
  t_0 <= t_1 <= t_2 <= t_3 of top-class probabilities (`top-levels`, each in [floor, 1]
  with hard4p1's floor 1/C + (1 - 1/C)/16) is nearest to max p_i;
- the runner-up label r_i (second-largest class), for the samples at the lowest level only
  (k_i = 0), with one runner-up share s per payload (`runner-share`: the mean second-largest
  probability of those samples).

The receiver decodes p_i = t_k on l_i, min(s, 0.999 t_k, 1 - t_k) on r_i where sent, the rest
spread evenly over the other classes: the label stays the argmax for C >= 6 (at the floor
the even rest, (1 - t)/(C - 2), is below t), and every row sums to 1.

The four fields are coded by an adaptive arithmetic coder (`range_coder`) as one stream,
each given the fields before it in the same sample (`CONTEXTS`): the label alone; the side
level given the label; the top level given both; the runner-up given the label. Counts
start flat and adapt along the payload, so no table is sent. On Fashion-MNIST's
gossip-adaptive beliefs (6000 common samples) the stream is 5.4-6.4 bits a sample, partition
means, screened by `make bench-replay` before it was a codec.

A receiver refuses a stream that does not decode, or whose decode does not code back to
exactly the same bytes (anything appended or altered that still decodes).
"""

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
from flower_gd.payload_codecs.hard4p1 import finite_tops, top_floor, with_top
from flower_gd.payload_codecs.range_coder import decode_fields, encode_fields

NAME = "hard4p2r1-ac"
LEVELS = 4  # top-class probability levels (2 bits before coding)
RUNNER_LEVELS = 1  # the lowest levels whose samples also send their runner-up
MIN_CLASSES = 6
# Each field's context, the earlier fields of the same sample it is coded given: label;
# side level | label; top level | label, side level; runner-up | label.
CONTEXTS = ((), (0,), (0, 1), (0,))
MAX_STREAM_BYTES_PER_SAMPLE = 8  # far above what four fields can cost: a bound, not a size
WEIGHT_LEVELS = 11  # non-zero weight levels, log-spaced over WEIGHT_SPAN nats
WEIGHT_SPAN = hard4.LOG_WEIGHT_SPAN


def weight_levels(weights: np.ndarray, levels: int = WEIGHT_LEVELS,
                  span: float = WEIGHT_SPAN) -> tuple[np.ndarray, float]:
    """Weight levels 1..`levels`, log-spaced over `span` nats up to the largest weight
    (nearest level in log W), 0 for weights further below (or 0); and that top log W. With
    15 levels over 8 nats it is hard4's `nibble_weights` (a test pins them equal)."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("per-sample weights must be finite and >= 0")
    if not (w > 0).any():
        return np.zeros(len(w), np.int64), 0.0
    log_w = np.log(np.maximum(w, 1e-300))
    top = max(float(log_w[w > 0].max()), hard4.MIN_LOG_WEIGHT)
    step = span / (levels - 1)
    level = np.round((log_w - (top - span)) / step) + 1
    level[(w <= 0) | (level < 1)] = 0
    return np.minimum(level, levels).astype(np.int64), top


def level_weights(level: np.ndarray, top: float, levels: int = WEIGHT_LEVELS,
                  span: float = WEIGHT_SPAN) -> np.ndarray:
    """The weights `weight_levels`' levels stand for (level 0: weight 0)."""
    step = span / (levels - 1)
    level = level.astype(np.float64)
    return np.where(level > 0, np.exp(top - span + (level - 1) * step), 0.0)


def lloyd_levels(top: np.ndarray, count: int, floor: float, iterations: int = 50
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A `count`-level Lloyd-Max codebook of top-class probabilities (each level in [floor,
    1], ascending), and each sample's level index (the nearest level). With count = 2 it is
    hard4p1's codebook (`hard4p1.top_levels`; a test pins them equal)."""
    p = np.asarray(top, dtype=np.float64)
    if len(p) == 0:
        return np.full(count, floor), np.zeros(0, np.int64)
    levels = np.clip(np.quantile(p, (np.arange(count) + 0.5) / count), floor, 1.0)
    for _ in range(iterations):
        index = np.searchsorted((levels[1:] + levels[:-1]) / 2, p)
        new = np.clip([p[index == k].mean() if (index == k).any() else levels[k]
                       for k in range(count)], floor, 1.0)
        if np.array_equal(new, levels):
            break
        levels = new
    # a cell's mean of equal values can round up past an empty neighbour's level by an ulp:
    # the codebook is ascending by construction, not by luck
    levels = np.maximum.accumulate(levels)
    return levels, np.searchsorted((levels[1:] + levels[:-1]) / 2, p)


def with_runner_up(top: np.ndarray, first: np.ndarray, second: np.ndarray, share: float,
                   c: int) -> np.ndarray:
    """Rows with `top` on the label, the payload's runner-up `share` (held below the top
    and within the mass left) on the runner-up, the rest spread evenly (float64)."""
    rows = np.arange(len(top))
    held = np.minimum(np.minimum(share, 0.999 * top), 1.0 - top)
    out = np.repeat(((1.0 - top - held) / (c - 2))[:, None], c, axis=1)
    out[rows, first] = top
    out[rows, second] = held
    return out


def _sizes(c: int, side: str) -> list[int]:
    """Each field's alphabet: label, side level, top level, runner-up."""
    return [c, WEIGHT_LEVELS + 1 if side == "weights" else NIBBLE, LEVELS, c]


def _side_levels(payload: InferencePayload, meta: dict) -> np.ndarray | None:
    """Each sample's weight level (`weight_levels`) or 4-bit confidence level, None without
    either; records `side` (and the weights' `log-top`) in `meta`."""
    if payload.confidence is not None and payload.sample_weights is not None:
        raise ValueError(f"codec {NAME} carries one side value per sample: weights or "
                         "confidences, not both")
    if payload.sample_weights is not None:
        level, meta["log-top"] = weight_levels(payload.sample_weights)
        meta["side"] = "weights"
        return level
    meta["side"] = "confidence" if payload.confidence is not None else "none"
    return hard4.side_levels(payload, {}, NAME)


def _side_values(level: np.ndarray | None, meta: dict
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(confidence, weights) from the side levels, by the metadata's `side`."""
    if level is None:
        return None, None
    if meta.get("side") == "confidence":  # a nibble: in [0, 1] by construction
        return level.astype(np.float32) / (NIBBLE - 1), None
    return None, level_weights(level, hard4.log_top(meta))


def _present(side: str) -> list:
    """Which fields a sample codes, given its fields before them (None: always)."""
    return [None, (lambda row: False) if side == "none" else None, None,
            lambda row: row[2] < RUNNER_LEVELS]


def encode(payload: InferencePayload, codec: Codec, meta: dict) -> dict[str, np.ndarray]:
    scores = np.asarray(payload.scores)
    n, c = scores.shape
    if c < MIN_CLASSES:
        raise ValueError(f"codec {NAME} needs at least {MIN_CLASSES} classes (its runner-up "
                         f"share must stay below the top), not {c}; use codec hard4p1")
    side = _side_levels(payload, meta)
    order = np.argsort(-scores, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    levels, index = lloyd_levels(finite_tops(scores), LEVELS, top_floor(c))
    low = index < RUNNER_LEVELS
    share = float(np.clip(scores[low, second[low]].astype(np.float64).mean(), 0.0, 1.0)) \
        if low.any() else 0.0
    meta["top-levels"] = [float(v) for v in levels]
    meta["runner-share"] = share if np.isfinite(share) else 0.0
    rows = np.stack([first, side if side is not None else np.full(n, -1), index,
                     np.where(low, second, -1)], axis=1).astype(np.int64).tolist()
    stream = encode_fields(rows, _sizes(c, meta["side"]), CONTEXTS)
    return {"stream": np.frombuffer(stream, dtype=np.uint8)}


def _fields(parts: Parts, meta: dict, shape: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The stream's label, side level (None without side values), top level and runner-up
    (-1 where not sent) per sample, with the stream checked to be their exact coding."""
    n, c = shape
    if c < MIN_CLASSES:
        raise PayloadError(f"{NAME} needs at least {MIN_CLASSES} classes; the receiver has {c}")
    side = hard4.side(meta, NAME)
    data = parts.take_bytes("stream", MAX_STREAM_BYTES_PER_SAMPLE * n + 64)
    try:
        rows = decode_fields(data, n, _sizes(c, side), CONTEXTS, _present(side))
    except ValueError as err:
        raise PayloadError(f"{NAME} stream does not decode: {err}") from None
    if encode_fields(rows, _sizes(c, side), CONTEXTS) != data:
        raise PayloadError(f"{NAME} stream is not the coding of the {n} samples it decodes "
                           "to (bytes appended or altered)")
    fields = np.array(rows, dtype=np.int64).reshape(n, 4)
    if (fields[:, 3] == fields[:, 0]).any():
        raise PayloadError(f"{NAME} runner-up labels repeat their sample's label")
    level = fields[:, 1] if side != "none" else None
    return fields[:, 0], level, fields[:, 2], fields[:, 3]


def _levels(meta: dict, c: int) -> np.ndarray:
    levels = meta.get("top-levels")
    floor = top_floor(c)
    if not (isinstance(levels, list) and len(levels) == LEVELS
            and all(isinstance(v, float) and floor - 1e-12 <= v <= 1.0 for v in levels)
            and all(a <= b for a, b in zip(levels, levels[1:], strict=False))):
        raise PayloadError(f"{NAME} top-levels {levels!r} are not {LEVELS} ascending "
                           f"probabilities in [{floor:.4f}, 1] (the smallest a top class may "
                           "have)")
    return np.asarray(levels, dtype=np.float64)


def _share(meta: dict) -> float:
    share = meta.get("runner-share")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise PayloadError(f"{NAME} runner-share {share!r} is not a probability")
    return float(share)


def decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    n, c = shape
    levels, share = _levels(meta, c), _share(meta)
    labels, level, index, runner = _fields(parts, meta, shape)
    top = levels[index]
    scores = with_top(top, labels, c)
    low = runner >= 0
    if low.any():
        scores[low] = with_runner_up(top[low], labels[low], runner[low], share, c)
    return Decoded(scores.astype(np.float32), *_side_values(level, meta))


def weights(parts: Parts, meta: dict, shape: tuple[int, int]) -> np.ndarray:
    """The weights alone (the whole stream is decoded: each field's context is the label)."""
    if hard4.side(meta, NAME) != "weights":
        raise PayloadError("payload lacks the weights this receiver needs")
    parts.only({"stream"})
    _, level, _, _ = _fields(parts, meta, shape)
    assert level is not None
    return level_weights(level, hard4.log_top(meta))


CODEC = PayloadCodec(NAME, encode, decode, weights, probabilities=True)
