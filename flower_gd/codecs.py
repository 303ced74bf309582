"""Inference-list payloads: encode into Flower records with a codec, decode with validation.

A payload is what a logit-sharing node transmits: its scores over the common data X_c, a
counter, and optionally per-sample DLAD confidences d(x) in [0, 1] or gossip-adaptive weights
W(x) >= 0. The codec decides the bytes on the wire:

========  ==========================================  =====================================
codec     scores                                      bytes per sample (C classes, k kept)
========  ==========================================  =====================================
float32   float32 (the paper's format)                4 C
float16   float16                                     2 C
uint8     probabilities as integers summing to 255    C
topk      k largest probabilities: uint8 index + uint8 2 k  (the rest spread evenly on decode)
hard      argmax label, uint8 (one-hot on decode)     1
hard4     argmax label in 4 bits (C <= 16), and the    1 with weights or confidences,
          sample's weight or confidence in 4 bits      1/2 without (before deflate)
hard4p1   hard4, and one bit per sample choosing one   hard4's + 1/8
          of two top-class probabilities (the
          payload's two-level Lloyd-Max codebook)
========  ==========================================  =====================================

Confidences and weights travel as float32 with the float32 codec; with hard4 and hard4p1 as the low
4 bits of the sample's byte (confidence round(15 d); weight as the nearest in log W of 15
levels spanning LOG_WEIGHT_SPAN nats below the payload's largest weight, 0 further below:
push-sum then conserves weight mass only approximately, each share off by up to a factor
e^(+-0.29) and the lightest shares dropped);
otherwise confidences as uint8 (d * 255) and weights as float16 log W. Every array is then
deflated with zlib (`deflate`: the smaller of the default strategy and Huffman coding
alone) when that saves at least 10% (lossless, flagged in the metadata; a
trained model's float32 probabilities save about 5% and stay raw, near one-hot beliefs and
hard4's symbols deflate). The meter sizes the message Flower serializes, so it counts the
encoded bytes.

On the wire a payload is one byte string, the one `bytes` value (field PAYLOAD_FIELD) of the
ConfigRecord under PAYLOAD_KEY: a magic number, a JSON header (the metadata: codec, kind,
counter, ...; and each part's name, dtype and shape) and the parts' bytes in header order.
Each Flower object costs its id in the message's object tree, a pull or push call and a
reference in its parent. A ConfigRecord is one object; an ArrayRecord holding one Array is
three (the record, the Array, its chunk), and each numpy Array adds a 128-byte .npy header:
the same payload as one Array in an ArrayRecord costs 618 bytes more going down to a node and
806 going up (a hard4 payload of 6000 samples, `tests/test_codecs.py` pins the saving), and as
separate arrays plus a ConfigRecord of metadata more still.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, RecordDict

# Record keys. The meter classifies a message as `scores` when it carries PAYLOAD_KEY and as
# `weights` when it carries ARRAYS_KEY (model arrays, Flower's own key), so these names are
# part of the metering contract.
PAYLOAD_KEY = "inference"
# Every instruction's own ConfigRecord (run-dir, server-round, the relay's receipts and
# relay-from): the one record name the ServerApp, the nodes and the meter agree on.
CONFIG_KEY = "config"
# A payload is the one bytes value of its ConfigRecord, under this field (module docstring).
PAYLOAD_FIELD = "payload"
_MAGIC = b"FGD1"
_HEAD = struct.Struct("<4sI")  # magic, header length
MAX_HEADER_BYTES = 4096
MAX_HEADER_BRACKETS = 64  # a header has about ten; deep nesting would exhaust json's recursion
# The part types a payload may hold, by the string the header names them with: a peer's
# string is looked up here, never handed to numpy's dtype parser.
PART_DTYPES = {np.dtype(t).str: np.dtype(t)
               for t in ("<u1", "<u2", "<f2", "<f4")}
ARRAYS_KEY = "arrays"
# Raw private samples: only the `central` bound sends them (tag `data`).
PRIVATE_DATA_KEY = "private-data"
MAX_COUNTER = 1_000_000
PROB_TOLERANCE = 1e-3
CODECS = ("float32", "float16", "uint8", "topk", "hard", "hard4", "hard4p1")
# Codecs that only carry probabilities (they quantize values in [0, 1]).
PROBABILITY_CODECS = ("uint8", "topk", "hard", "hard4", "hard4p1")
# The codecs of 4-bit labels (hard4p1 is hard4 plus one bit per sample).
NIBBLE_CODECS = ("hard4", "hard4p1")
# hard4: 4-bit symbols; 15 non-zero weight levels spanning LOG_WEIGHT_SPAN nats (e^8 ~ 2981)
NIBBLE = 16
LOG_WEIGHT_SPAN = 8.0
_WEIGHT_STEP = LOG_WEIGHT_SPAN / (NIBBLE - 2)
MAX_LOG_WEIGHT = float(np.log(1e30))
MIN_LOG_WEIGHT = -700.0  # exp() of less is 0 in float64: hard4's smallest top log-weight
# zlib an array only when it saves at least 10% (float32 probabilities save ~5%: not worth it).
COMPRESS_WHEN = 0.9
_TOLERANCE = {"float32": PROB_TOLERANCE, "float16": 1e-2}


class PayloadError(ValueError):
    """A peer's payload failed validation; the receiver must keep its previous state."""


@dataclass(frozen=True)
class InferencePayload:
    """What a node shares: its inference list over X_c and its counter (paper: IL_j, C_j)."""

    scores: np.ndarray  # (n_common, C) float32
    counter: int
    kind: str  # "probs" or "logits"
    confidence: np.ndarray | None = None  # (n_common,) in [0, 1]: DLAD's d_i(x)
    sample_weights: np.ndarray | None = None  # (n_common,) >= 0: gossip-adaptive's W_i(x)


@dataclass(frozen=True)
class Expect:
    """What a receiver needs of a payload, checked at decode (a missing part is refused)."""

    kind: str | None = None  # "probs" or "logits"; None accepts either
    confidence: bool = False  # DLAD's server weights uploads by d_i(x)
    sample_weights: bool = False  # gossip-adaptive mixes by W_j(x)


@dataclass(frozen=True)
class Codec:
    """How scores are put on the wire: `name` in CODECS, `topk` for the topk codec."""

    name: str = "float32"
    topk: int = 2
    compress: bool = True  # zlib each array when that makes it smaller

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ValueError(f"codec {self.name!r} unknown; choose one of {list(CODECS)}")
        if self.topk < 1:
            raise ValueError(f"codec-topk={self.topk} must be >= 1")


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


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


def _score_parts(scores: np.ndarray, codec: Codec) -> dict[str, np.ndarray]:
    if codec.name == "float32":
        return {"scores": np.ascontiguousarray(scores, dtype=np.float32)}
    if codec.name == "float16":
        return {"scores": scores.astype(np.float16)}
    if codec.name == "uint8":
        return {"scores": quantize_probs(scores)}
    num_classes = scores.shape[1]
    if codec.name == "hard":
        return {"labels": scores.argmax(axis=1).astype(label_dtype(num_classes))}
    k = min(codec.topk, num_classes)
    index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores.astype(np.float64), index, axis=1)
    return {"topk-index": index.astype(label_dtype(num_classes)),
            "topk-value": np.floor(np.clip(values, 0, 1) * 255).astype(np.uint8)}


def nibble_weights(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """hard4's weights: levels 1-15, log-spaced over LOG_WEIGHT_SPAN nats up to the largest
    weight (nearest level in log W), 0 for weights further below (or 0); and that top log W."""
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
    """The weights hard4's levels stand for (level 0: weight 0)."""
    level = level.astype(np.float64)
    return np.where(level > 0, np.exp(top - LOG_WEIGHT_SPAN + (level - 1) * _WEIGHT_STEP), 0.0)


def top_floor(num_classes: int) -> float:
    """hard4p1's smallest top-class probability: one sixteenth of the way from uniform (1/C)
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
    """hard4p1's extra bit per sample (packed, 8 samples a byte, first sample in the high
    bit): 1 where the sample's top-class probability is nearer the codebook's upper value;
    and the codebook (`top_levels`)."""
    top = finite_tops(scores)
    levels = top_levels(top, top_floor(scores.shape[1]))
    return np.packbits(top > levels.mean()), levels


def _hard4_parts(payload: InferencePayload, meta: dict) -> dict[str, np.ndarray]:
    """One byte per sample, label << 4 | side value, where the payload has weights or
    confidences; two labels per byte where it has neither."""
    num_classes = payload.scores.shape[1]
    if num_classes > NIBBLE:
        raise ValueError(f"codecs {list(NIBBLE_CODECS)} pack labels in 4 bits: {num_classes} "
                         f"classes > {NIBBLE}; use codec hard")
    if payload.confidence is not None and payload.sample_weights is not None:
        raise ValueError(f"codecs {list(NIBBLE_CODECS)} carry one 4-bit value per sample: "
                         "weights or confidences, not both")
    labels = payload.scores.argmax(axis=1).astype(np.uint8)
    if payload.sample_weights is not None:
        side, meta["log-top"] = nibble_weights(payload.sample_weights)
        meta["side"] = "weights"
    elif payload.confidence is not None:
        conf = np.clip(np.asarray(payload.confidence, dtype=np.float64), 0, 1)
        side, meta["side"] = np.round(conf * (NIBBLE - 1)).astype(np.uint8), "confidence"
    else:
        meta["side"] = "none"
        padded = np.append(labels, np.uint8(0)) if len(labels) % 2 else labels
        return {"labels4": (padded[0::2] << 4 | padded[1::2]).astype(np.uint8)}
    return {"symbols": (labels << 4 | side).astype(np.uint8)}


def _side_parts(payload: InferencePayload, compact: bool) -> dict[str, np.ndarray]:
    """Confidences and weights as their own arrays (`compact`: uint8 d and float16 log W)."""
    parts: dict[str, np.ndarray] = {}
    if payload.confidence is not None:
        conf = np.asarray(payload.confidence, dtype=np.float64)
        parts["confidence"] = (np.round(np.clip(conf, 0, 1) * 255).astype(np.uint8) if compact
                               else conf.astype(np.float32))
    if payload.sample_weights is not None:  # on the wire as the "weights" array
        w = np.asarray(payload.sample_weights, dtype=np.float64)
        parts["weights"] = (np.log(np.maximum(w, 1e-30)).astype(np.float16) if compact
                            else w.astype(np.float32))
    return parts


def encode_payload(payload: InferencePayload, codec: Codec | None = None,
                   content: RecordDict | None = None, key: str = PAYLOAD_KEY) -> RecordDict:
    """Put a payload into a RecordDict under `key`, encoded with `codec`."""
    codec = codec or Codec()
    if payload.kind == "logits" and codec.name in PROBABILITY_CODECS:
        raise ValueError(f"codec {codec.name} quantizes probabilities; it cannot carry logits "
                         "(use inference-output=probs, or codec float32/float16)")
    content = RecordDict() if content is None else content
    meta: dict = {"counter": int(payload.counter), "kind": payload.kind, "codec": codec.name}
    if codec.name in NIBBLE_CODECS:  # the side values travel inside the symbols
        parts = _hard4_parts(payload, meta)
        if codec.name == "hard4p1":
            parts["top-bit"], levels = top_bits(payload.scores)
            meta["top-levels"] = [float(v) for v in levels]
    else:
        parts = {**_score_parts(payload.scores, codec),
                 **_side_parts(payload, compact=codec.name != "float32")}
    arrays, zipped = {}, []
    for name, arr in parts.items():
        raw = np.ascontiguousarray(arr)
        packed = deflate(raw.tobytes()) if codec.compress else b""
        if codec.compress and len(packed) <= COMPRESS_WHEN * raw.nbytes:
            arrays[name] = np.frombuffer(packed, dtype=np.uint8)
            zipped.append(name)
        else:
            arrays[name] = raw
    if codec.name == "topk":
        meta["topk"] = int(min(codec.topk, payload.scores.shape[1]))
    if zipped:
        meta["zlib"] = zipped
    content[key] = seal_payload(arrays, meta)
    return content


def seal_payload(arrays: dict[str, np.ndarray], meta: dict) -> ConfigRecord:
    """One payload's parts and metadata as one byte string in a ConfigRecord (module
    docstring: the layout)."""
    parts = [[name, np.ascontiguousarray(a).dtype.str, list(a.shape)]
             for name, a in arrays.items()]
    odd = [part for part in parts if part[1] not in PART_DTYPES]
    if odd:
        raise ValueError(f"payload parts {odd} are not of the types {sorted(PART_DTYPES)}")
    header = json.dumps({"meta": meta, "parts": parts}, separators=(",", ":"),
                        allow_nan=False).encode()
    blob = b"".join([_HEAD.pack(_MAGIC, len(header)), header,
                     *(np.ascontiguousarray(a).tobytes() for a in arrays.values())])
    return ConfigRecord({PAYLOAD_FIELD: blob})


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def open_payload(content: RecordDict, key: str = PAYLOAD_KEY
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """A payload's parts by name and its metadata, as `seal_payload` wrote them.

    Raises
    ------
    PayloadError
        No payload under `key`, or one that is not a well-formed flower-gd payload: another
        field or value type, a bad magic number, a header that is not the JSON this
        module writes, or parts whose sizes do not add up to the bytes sent.
    """
    record = payload_record(content, key)
    if list(record) != [PAYLOAD_FIELD]:
        raise PayloadError(f"payload record holds fields {sorted(record)}, expected only "
                           f"'{PAYLOAD_FIELD}': the peer runs other code?")
    data = record[PAYLOAD_FIELD]
    if not isinstance(data, bytes):
        raise PayloadError(f"payload field '{PAYLOAD_FIELD}' holds {type(data).__name__}, "
                           "not bytes: the peer runs other code?")
    if len(data) < _HEAD.size:
        raise PayloadError(f"payload of {len(data)} bytes is shorter than its header")
    magic, length = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise PayloadError(f"payload starts with {magic!r}, not {_MAGIC!r}")
    if length > min(MAX_HEADER_BYTES, len(data) - _HEAD.size):
        raise PayloadError(f"payload header length {length} exceeds the payload or "
                           f"{MAX_HEADER_BYTES} bytes")
    text = data[_HEAD.size:_HEAD.size + length]
    if text.count(b"[") + text.count(b"{") > MAX_HEADER_BRACKETS:
        raise PayloadError(f"payload header nests more than {MAX_HEADER_BRACKETS} brackets")
    try:
        header = json.loads(text.decode(), parse_constant=_no_constant,
                            parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PayloadError(f"payload header is not valid JSON: {err}") from None
    if not isinstance(header, dict) or set(header) != {"meta", "parts"} or \
            not isinstance(header["meta"], dict) or not isinstance(header["parts"], list):
        raise PayloadError("payload header must be an object with 'meta' and 'parts'")
    arrays: dict[str, np.ndarray] = {}
    offset = _HEAD.size + length
    for part in header["parts"]:
        name, dtype, shape = _part(part)
        if name in arrays:
            raise PayloadError(f"payload lists the part '{name}' twice")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + nbytes > len(data):
            raise PayloadError(f"payload part '{name}' runs past the end of the payload")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize,
                                     offset=offset).reshape(shape)
        offset += nbytes
    if offset != len(data):
        raise PayloadError(f"payload carries {len(data) - offset} bytes its header does "
                           "not list")
    return arrays, header["meta"]


def _part(part: object) -> tuple[str, np.dtype, tuple[int, ...]]:
    """One header entry [name, dtype, shape], validated: one of PART_DTYPES and at most two
    non-negative dimensions."""
    if not (isinstance(part, list) and len(part) == 3 and isinstance(part[0], str)
            and isinstance(part[1], str) and isinstance(part[2], list)):
        raise PayloadError(f"payload header part {part!r} is not [name, dtype, shape]")
    name, dtype_str, shape = part
    dtype = PART_DTYPES.get(dtype_str)
    if dtype is None:
        raise PayloadError(f"payload part '{name}' has dtype {dtype_str[:20]!r}; parts are "
                           f"one of {sorted(PART_DTYPES)}")
    if len(shape) > 2 or not all(isinstance(d, int) and not isinstance(d, bool)
                                 and 0 <= d <= 2**31 for d in shape):
        raise PayloadError(f"payload part '{name}' has an invalid shape {shape!r}")
    return name, dtype, tuple(shape)


def deflate(raw: bytes) -> bytes:
    """zlib data of `raw`, the smaller of two encoder strategies (one decoder reads both):
    the default (LZ77 matches, then Huffman) and Huffman coding alone. A stream of nearly
    independent symbols, as hard4's, has few matches worth their codes: Huffman alone gets
    within a few percent of its order-0 entropy where the default spends about a tenth more
    (measured on gossip-adaptive's hard4 payloads, Fashion-MNIST niid1: 4.45 against 4.93
    bits per sample, entropy 4.36)."""
    best = zlib.compress(raw, 6)
    huffman = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    alone = huffman.compress(raw) + huffman.flush()
    return alone if len(alone) < len(best) else best


def payload_record(content: RecordDict, key: str = PAYLOAD_KEY) -> ConfigRecord:
    """The record that carries the payload under `key` (what a relay forwards unchanged).

    Raises
    ------
    PayloadError
        When `content` has no payload record under `key`.
    """
    if key not in content.config_records:
        raise PayloadError(f"the message lacks the '{key}' payload record")
    return content.config_records[key]


def payload_key(index: int) -> str:
    """Record key of the index-th payload of a message relaying several (index 0: the plain
    `inference`)."""
    return PAYLOAD_KEY if index == 0 else f"{PAYLOAD_KEY}-{index}"


def count_payloads(content: RecordDict) -> int:
    """How many payloads (0, 1, 2, ...) a message carries, keyed as `payload_key` names them."""
    n = 0
    while payload_key(n) in content.config_records:
        n += 1
    return n


# ------------------------------------------------------------------------------ decoding
def _expected_parts(codec: str, shape: tuple[int, int], k: int) -> dict[str, tuple]:
    n, c = shape
    if codec in ("float32", "float16"):
        return {"scores": (np.dtype(codec), (n, c))}
    if codec == "uint8":
        return {"scores": (np.dtype(np.uint8), (n, c))}
    if codec == "hard":
        return {"labels": (label_dtype(c), (n,))}
    return {"topk-index": (label_dtype(c), (n, k)), "topk-value": (np.dtype(np.uint8), (n, k))}


Parts = dict[str, np.ndarray]


def _unpack(arrays: Parts, name: str, dtype: np.dtype, shape: tuple, zipped: bool
            ) -> np.ndarray:
    if name not in arrays:
        raise PayloadError(f"payload lacks the '{name}' array")
    arr = arrays[name]
    if zipped:
        expected = int(np.prod(shape)) * dtype.itemsize
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(arr.tobytes(), expected + 1)  # bounded: no zip bombs
        except zlib.error as err:
            raise PayloadError(f"'{name}' is not valid zlib data: {err}") from None
        if len(raw) != expected or not inflater.eof:
            raise PayloadError(f"'{name}' inflates to the wrong size for shape {shape} "
                               f"{dtype}: the peer runs on different common data?")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if arr.dtype != dtype:
        raise PayloadError(f"'{name}' has dtype {arr.dtype}, expected {dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise PayloadError(f"'{name}' has shape {tuple(arr.shape)}, expected {shape} "
                           "(n_common, classes): the peer runs on different common data?")
    return arr


def _check_probs(scores: np.ndarray, tolerance: float) -> None:
    if len(scores) == 0:  # no samples: nothing to check (an empty common set)
        return
    if (scores < 0).any():
        raise PayloadError("probabilities are negative")
    worst = float(np.abs(scores.sum(axis=1, dtype=np.float64) - 1.0).max())
    if worst > tolerance:
        raise PayloadError(f"probability rows do not sum to 1 (off by up to {worst:.3g})")


def _decode_scores(codec: str, parts: dict[str, np.ndarray], kind: str, shape: tuple[int, int]
                   ) -> np.ndarray:
    n, c = shape
    if codec in ("float32", "float16"):
        scores = parts["scores"].astype(np.float32)
        if not np.isfinite(scores).all():
            raise PayloadError(f"scores hold {int((~np.isfinite(scores)).sum())} NaN/inf values")
        if kind == "probs":
            _check_probs(scores, _TOLERANCE[codec])
            if codec == "float16":  # renormalise away float16 rounding
                scores = scores / scores.sum(axis=1, keepdims=True)
        return scores
    if codec == "uint8":
        sums = parts["scores"].sum(axis=1, dtype=np.int64)
        if (sums != 255).any():
            raise PayloadError(f"uint8 probability rows must sum to 255; "
                               f"{int((sums != 255).sum())} rows do not")
        return (parts["scores"].astype(np.float32) / 255.0)
    if codec == "hard":
        labels = parts["labels"].astype(np.int64)
        if (labels >= c).any():
            raise PayloadError(f"labels out of range [0, {c})")
        return np.eye(c, dtype=np.float32)[labels]
    index = parts["topk-index"].astype(np.int64)
    values = parts["topk-value"].astype(np.float64) / 255.0
    k = index.shape[1]
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
    rest = np.minimum(rest, values.min(axis=1))
    scores = np.repeat(rest[:, None], c, axis=1)
    np.put_along_axis(scores, index, values, axis=1)
    total = scores.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise PayloadError(f"{int((total <= 0).sum())} top-k rows carry no probability at all")
    return (scores / total).astype(np.float32)


def _sample_weights(arrays: Parts, n: int, compact: bool, zipped: bool) -> np.ndarray:
    dtype = np.dtype(np.float16 if compact else np.float32)
    raw = _unpack(arrays, "weights", dtype, (n,), zipped)
    if not np.isfinite(raw).all():
        raise PayloadError("weights hold NaN/inf values")
    weights = np.exp(raw.astype(np.float64)) if compact else raw.astype(np.float64)
    if (weights < 0).any():
        raise PayloadError("weights are negative")
    if not np.isfinite(weights).all() or weights.max(initial=0.0) > 1e30:
        raise PayloadError("weights are absurdly large (> 1e30)")
    return weights


def decode_sample_weights(content: RecordDict, n: int, key: str = PAYLOAD_KEY) -> np.ndarray:
    """Only the per-sample weights W_j of a payload, validated on their own: a push-sum
    receiver keeps the mass of a payload whose scores it refused (see gossip-adaptive).

    Raises
    ------
    PayloadError
        When the payload has no valid weights of length `n`.
    """
    arrays, meta = open_payload(content, key)
    codec = meta.get("codec")
    if codec not in CODECS:
        raise PayloadError(f"unsupported codec {codec!r}; known: {list(CODECS)}")
    zipped = _zipped(meta)
    if codec in NIBBLE_CODECS:
        _, level = _hard4_symbols(arrays, meta, n, zipped, codec)
        if meta.get("side") != "weights" or level is None:
            raise PayloadError("payload lacks the weights this receiver needs")
        return unnibble_weights(level, _log_top(meta))
    return _sample_weights(arrays, n, codec != "float32", "weights" in zipped)


def _zipped(meta: dict) -> set:
    """The names of the parts the metadata says are deflated."""
    listed = meta.get("zlib", [])
    names = listed if isinstance(listed, list) else [listed]
    if not all(isinstance(name, str) for name in names):
        raise PayloadError(f"payload zlib list {listed!r} names no parts")
    return set(names)


def _log_top(meta: dict) -> float:
    top = meta.get("log-top")
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not \
            MIN_LOG_WEIGHT <= top <= MAX_LOG_WEIGHT:
        raise PayloadError(f"{meta.get('codec')} log-top {top!r} is not a log-weight in "
                           f"[{MIN_LOG_WEIGHT:.1f}, {MAX_LOG_WEIGHT:.1f}]")
    return float(top)


def _hard4_symbols(arrays: Parts, meta: dict, n: int, zipped: set, codec: str
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """hard4's labels and side levels (None where the payload has no side values)."""
    side = meta.get("side")
    if side not in ("weights", "confidence", "none"):
        raise PayloadError(f"{codec} side {side!r} unknown: weights, confidence or none")
    name, length = ("labels4", (n + 1) // 2) if side == "none" else ("symbols", n)
    extra = sorted(set(arrays) - {name} - ({"top-bit"} if codec == "hard4p1" else set()))
    if extra:
        raise PayloadError(f"payload holds arrays no {codec} payload has: {extra}")
    raw = _unpack(arrays, name, np.dtype(np.uint8), (length,), name in zipped)
    if side == "none":
        if n % 2 and raw[-1] & (NIBBLE - 1):
            raise PayloadError(f"{codec} labels4: the pad nibble after the last label is not 0")
        labels = np.stack([raw >> 4, raw & (NIBBLE - 1)], axis=1).reshape(-1)[:n]
        return labels, None
    return raw >> 4, raw & (NIBBLE - 1)


def _decode_top(arrays: Parts, meta: dict, labels: np.ndarray, c: int, zipped: set
                ) -> np.ndarray:
    """hard4p1's scores: each sample's codebook value on its label, the rest of its mass
    spread evenly over the other classes."""
    n = len(labels)
    levels = meta.get("top-levels")
    floor = top_floor(c)
    if not (isinstance(levels, list) and len(levels) == 2
            and all(isinstance(v, float) and floor - 1e-12 <= v <= 1.0 for v in levels)):
        raise PayloadError(f"hard4p1 top-levels {levels!r} are not two probabilities in "
                           f"[{floor:.4f}, 1] (the smallest a top class may have)")
    packed = _unpack(arrays, "top-bit", np.dtype(np.uint8), ((n + 7) // 8,), "top-bit" in zipped)
    if n % 8 and packed[-1] & ((1 << (8 - n % 8)) - 1):
        raise PayloadError("hard4p1 top-bit: the pad bits after the last sample are not 0")
    top = np.asarray(levels, dtype=np.float64)[np.unpackbits(packed)[:n]]
    scores = np.repeat(((1.0 - top) / max(c - 1, 1))[:, None], c, axis=1)
    scores[np.arange(n), labels] = top
    return scores.astype(np.float32)


def _decode_hard4(arrays: Parts, meta: dict, shape: tuple[int, int],
                  zipped: set, expect: Expect, counter: int, codec: str) -> InferencePayload:
    n, c = shape
    labels, level = _hard4_symbols(arrays, meta, n, zipped, codec)
    if (labels >= c).any():
        raise PayloadError(f"labels out of range [0, {c})")
    side = meta.get("side")
    for wanted, needed in ((expect.confidence, "confidence"), (expect.sample_weights, "weights")):
        if wanted and side != needed:
            raise PayloadError(f"payload lacks the {needed} this receiver needs")
    confidence = sample_weights = None
    if side == "confidence" and level is not None:  # a nibble: in [0, 1] by construction
        confidence = level.astype(np.float32) / (NIBBLE - 1)
    elif side == "weights" and level is not None:
        sample_weights = unnibble_weights(level, _log_top(meta))
    labels = labels.astype(np.int64)
    if codec == "hard4p1":
        scores = _decode_top(arrays, meta, labels, c, zipped)
        if not np.isfinite(scores).all():  # the postcondition, checked rather than trusted
            raise PayloadError("probabilities decode to NaN/inf")
        _check_probs(scores, PROB_TOLERANCE)
    else:
        scores = np.eye(c, dtype=np.float32)[labels]
    return InferencePayload(scores=scores, counter=counter, kind="probs", confidence=confidence,
                            sample_weights=sample_weights)


def decode_payload(content: RecordDict, expected_shape: tuple[int, int], key: str = PAYLOAD_KEY,
                   expect: Expect | None = None) -> InferencePayload:
    """Read and validate a peer's payload (any codec); scores come back as float32 (n, C).

    Whatever the codec, probabilities come back finite, non-negative and summing to 1 per
    row, or the payload is refused: no input decodes to NaN.

    Raises
    ------
    PayloadError
        A record that is not a well-formed payload (`open_payload`), arrays the receiver
        needs (`expect`) missing, arrays no codec writes, a
        kind the receiver does not mix, unknown codec, wrong shape or dtype, data that does
        not inflate to the expected size, NaN/inf, negative or non-normalised
        probabilities, rows with no probability, out-of-range labels or indices,
        confidences outside [0, 1], negative or absurd weights, or a counter out of range.
    """
    expect = expect or Expect()
    arrays, meta = open_payload(content, key)
    codec = meta.get("codec")
    if codec not in CODECS:
        raise PayloadError(f"unsupported codec {codec!r}; known: {list(CODECS)}")
    kind = meta.get("kind")
    if kind not in ("probs", "logits"):
        raise PayloadError(f"unknown score kind {kind!r}")
    if codec in PROBABILITY_CODECS and kind != "probs":
        raise PayloadError(f"codec {codec} carries probabilities, but the payload says {kind}")
    if expect.kind is not None and kind != expect.kind:
        raise PayloadError(f"the payload carries {kind}, this receiver mixes {expect.kind}")
    counter = meta.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_COUNTER:
        raise PayloadError(f"counter {counter!r} out of range [1, {MAX_COUNTER}]")
    n, c = (int(s) for s in expected_shape)
    k = meta.get("topk", 0)
    if codec == "topk" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= c):
        raise PayloadError(f"topk {k!r} out of range [1, {c}]")
    k = k if isinstance(k, int) else 0
    zipped = _zipped(meta)
    if codec in NIBBLE_CODECS:
        return _decode_hard4(arrays, meta, (n, c), zipped, expect, counter, codec)
    expected = _expected_parts(codec, (n, c), k)
    extra = sorted(set(arrays) - set(expected) - {"confidence", "weights"})
    if extra:
        raise PayloadError(f"payload holds arrays no {codec} payload has: {extra}")
    for name, wanted in (("confidence", expect.confidence), ("weights", expect.sample_weights)):
        if wanted and name not in arrays:
            raise PayloadError(f"payload lacks the '{name}' array this receiver needs")
    parts = {name: _unpack(arrays, name, dtype, shape, name in zipped)
             for name, (dtype, shape) in expected.items()}
    scores = _decode_scores(codec, parts, str(kind), (n, c))
    if kind == "probs":  # the postcondition of every codec, checked rather than trusted
        if not np.isfinite(scores).all():
            raise PayloadError("probabilities decode to NaN/inf")
        _check_probs(scores, PROB_TOLERANCE)
    compact = codec != "float32"
    confidence = sample_weights = None
    if "confidence" in arrays:
        dtype = np.dtype(np.uint8 if compact else np.float32)
        raw = _unpack(arrays, "confidence", dtype, (n,), "confidence" in zipped)
        confidence = raw.astype(np.float32) / 255.0 if compact else raw.astype(np.float32)
        if not np.isfinite(confidence).all() or (confidence < 0).any() or (confidence > 1).any():
            raise PayloadError("confidence values must be finite and in [0, 1]")
    if "weights" in arrays:
        sample_weights = _sample_weights(arrays, n, compact, "weights" in zipped)
    return InferencePayload(scores=scores, counter=counter, kind=str(kind),
                            confidence=confidence, sample_weights=sample_weights)
