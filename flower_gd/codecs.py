"""Inference-list payloads: the envelope every codec shares, the float32 codec, and dispatch.

A payload is what a logit-sharing node transmits: its scores over the common data X_c, a
counter, and optionally per-sample DLAD confidences d(x) in [0, 1] or gossip-adaptive weights
W(x) >= 0. The codec (run-config `codec`) decides the bytes on the wire. float32, the
paper's format, lives here; every other codec is one module of `flower_gd.payload_codecs`,
found through that package's registry:

============  ==========================================  ==================================
codec         scores                                      bytes per sample (C classes)
============  ==========================================  ==================================
float32       float32 (the paper's format)                4 C
float16       float16                                     2 C
uint8         probabilities as integers summing to 255    C
topk          k largest probabilities: uint8 index +      2 k (the rest spread evenly on
              uint8 value                                 decode)
hard          argmax label, uint8 (one-hot on decode)     1
hard4         argmax label in 4 bits (C <= 16), and the   1 with weights or confidences,
              sample's weight or confidence in 4 bits     1/2 without (before deflate)
hard4p1       hard4, and one bit per sample choosing one  hard4's + 1/8
              of two top-class probabilities
hard4p2r1-ac  label, 4-bit weight or confidence, one of   about 0.7-0.8 (arithmetic-coded,
              four top-class probabilities, and the       measured on gossip-adaptive's
              runner-up label for the least confident     beliefs)
              quarter, arithmetic-coded in context
============  ==========================================  ==================================

The codecs differ in the parts they write; what they share is here: the envelope (below),
zlib for every part where it pays (`deflate`: the smaller of the default strategy and
Huffman coding alone, kept when it saves at least 10%, lossless, flagged in the metadata;
a trained model's float32 probabilities save about 5% and stay raw, near one-hot beliefs and
hard4's symbols deflate), and the checks every decode ends with: probabilities finite,
non-negative, summing to 1 per row; confidences in [0, 1]; weights finite, >= 0 and at most
1e30; the parts the receiver needs present, and no part its codec does not write. The
meter sizes the message Flower serializes, so it counts the encoded bytes.

Each codec module is part of the code of the runs that use it, and of no other run
(`flower_gd/provenance.py`): a new codec, or an edit to one, re-measures only its runs.

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
from collections.abc import Callable
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
MAX_WEIGHT = 1e30
# zlib a part only when it saves at least 10% (float32 probabilities save ~5%: not worth it).
COMPRESS_WHEN = 0.9
DEFAULT_CODEC = "float32"


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
    """How a node puts scores on the wire: `name` (a codec of `flower_gd.payload_codecs`),
    `topk` for the topk codec, `compress` to zlib each part where that pays."""

    name: str = DEFAULT_CODEC
    topk: int = 2
    compress: bool = True

    def __post_init__(self) -> None:
        from flower_gd.payload_codecs import CODECS  # the registry imports this module

        if self.name not in CODECS:
            raise ValueError(f"codec {self.name!r} unknown; choose one of {list(CODECS)}")
        if self.topk < 1:
            raise ValueError(f"codec-topk={self.topk} must be >= 1")


@dataclass(frozen=True)
class Decoded:
    """What a codec's decoder recovered: scores (n, C) and the side values it carries."""

    scores: np.ndarray
    confidence: np.ndarray | None = None
    sample_weights: np.ndarray | None = None


class Parts:
    """A payload's parts as its header listed them, handed to its codec's decoder: each part
    is taken once, by name, with the dtype and shape the decoder expects (inflated, bounded,
    where the metadata says it is deflated). A part no decoder took is refused afterwards."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, codec: str) -> None:
        self._arrays = arrays
        self._zipped = _zipped(meta)
        self.codec = codec
        self.taken: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def take(self, name: str, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.ndarray:
        """The part `name` as `dtype` of `shape`, or PayloadError naming what is wrong."""
        dtype = np.dtype(dtype)
        if name not in self._arrays:
            raise PayloadError(f"payload lacks the '{name}' array")
        self.taken.add(name)
        arr = self._arrays[name]
        if name in self._zipped:
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

    def take_bytes(self, name: str, limit: int) -> bytes:
        """A part of variable length (an entropy-coded stream): its bytes, at most `limit`
        (inflated, bounded, where deflated), or PayloadError."""
        if name not in self._arrays:
            raise PayloadError(f"payload lacks the '{name}' array")
        self.taken.add(name)
        arr = self._arrays[name]
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise PayloadError(f"'{name}' must be a 1-d uint8 part, not {arr.dtype} "
                               f"{tuple(arr.shape)}")
        data = arr.tobytes()
        if name in self._zipped:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, limit + 1)  # bounded: no zip bombs
            except zlib.error as err:
                raise PayloadError(f"'{name}' is not valid zlib data: {err}") from None
            if not inflater.eof:
                raise PayloadError(f"'{name}' inflates past {limit} bytes" if len(data) > limit
                                   else f"'{name}' is truncated zlib data")
        if len(data) > limit:
            raise PayloadError(f"'{name}' holds {len(data)} bytes, more than the {limit} "
                               "its samples can take")
        return data

    def only(self, names: set[str]) -> None:
        """Refuse a payload holding parts other than `names` (the weights-alone path, which
        takes fewer parts than the codec writes)."""
        extra = sorted(set(self._arrays) - names)
        if extra:
            raise PayloadError(f"payload holds arrays no {self.codec} payload has: {extra}")

    def untaken(self) -> list[str]:
        return sorted(set(self._arrays) - self.taken)


@dataclass(frozen=True)
class PayloadCodec:
    """One codec: how it writes a payload's parts and reads them back.

    `encode(payload, codec, meta)` returns the raw parts (the envelope deflates them) and may
    add entries to `meta`; `decode(parts, meta, (n, C), kind)` returns what the parts carry,
    validated as far as the codec knows (the envelope checks the rest); `weights(parts, meta,
    n)` the per-sample weights alone (a push-sum receiver keeps the mass of a payload whose
    scores it refused). `probabilities`: it quantizes probabilities, so it cannot carry logits.
    """

    name: str
    encode: Callable[[InferencePayload, Codec, dict], dict[str, np.ndarray]]
    decode: Callable[[Parts, dict, tuple[int, int], str], Decoded]
    weights: Callable[[Parts, dict, tuple[int, int]], np.ndarray]
    probabilities: bool


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


# ------------------------------------------------------------------ what codecs share
def check_probs(scores: np.ndarray, tolerance: float = PROB_TOLERANCE) -> None:
    """Probability rows: finite, non-negative, each summing to 1 within `tolerance`."""
    if len(scores) == 0:  # no samples: nothing to check (an empty common set)
        return
    if not np.isfinite(scores).all():
        raise PayloadError("probabilities decode to NaN/inf")
    if (scores < 0).any():
        raise PayloadError("probabilities are negative")
    worst = float(np.abs(scores.sum(axis=1, dtype=np.float64) - 1.0).max())
    if worst > tolerance:
        raise PayloadError(f"probability rows do not sum to 1 (off by up to {worst:.3g})")


def side_parts(payload: InferencePayload, compact: bool) -> dict[str, np.ndarray]:
    """Confidences and weights as their own parts: float32, or (`compact`) uint8 d * 255 and
    float16 log W."""
    parts: dict[str, np.ndarray] = {}
    if payload.confidence is not None:
        conf = np.asarray(payload.confidence, dtype=np.float64)
        parts["confidence"] = (np.round(np.clip(conf, 0, 1) * 255).astype(np.uint8) if compact
                               else conf.astype(np.float32))
    if payload.sample_weights is not None:  # on the wire as the "weights" part
        w = np.asarray(payload.sample_weights, dtype=np.float64)
        parts["weights"] = (np.log(np.maximum(w, 1e-30)).astype(np.float16) if compact
                            else w.astype(np.float32))
    return parts


def side_weights(parts: Parts, n: int, compact: bool) -> np.ndarray:
    """`side_parts`' weights, validated."""
    raw = parts.take("weights", np.float16 if compact else np.float32, (n,))
    if not np.isfinite(raw).all():
        raise PayloadError("weights hold NaN/inf values")
    weights = np.exp(raw.astype(np.float64)) if compact else raw.astype(np.float64)
    if (weights < 0).any():
        raise PayloadError("weights are negative")
    if not np.isfinite(weights).all() or weights.max(initial=0.0) > MAX_WEIGHT:
        raise PayloadError("weights are absurdly large (> 1e30)")
    return weights


def side_values(parts: Parts, n: int, compact: bool
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`side_parts`' confidences and weights where the payload has them."""
    confidence = weights = None
    if "confidence" in parts:
        raw = parts.take("confidence", np.uint8 if compact else np.float32, (n,))
        confidence = raw.astype(np.float32) / 255.0 if compact else raw.astype(np.float32)
        if not np.isfinite(confidence).all() or (confidence < 0).any() or (confidence > 1).any():
            raise PayloadError("confidence values must be finite and in [0, 1]")
    if "weights" in parts:
        weights = side_weights(parts, n, compact)
    return confidence, weights


# ------------------------------------------------------------------ float32, the paper's
def _float32_encode(payload: InferencePayload, codec: Codec, meta: dict
                    ) -> dict[str, np.ndarray]:
    return {"scores": np.ascontiguousarray(payload.scores, dtype=np.float32),
            **side_parts(payload, compact=False)}


def _float32_decode(parts: Parts, meta: dict, shape: tuple[int, int], kind: str) -> Decoded:
    scores = parts.take("scores", np.float32, shape).astype(np.float32)
    if not np.isfinite(scores).all():
        raise PayloadError(f"scores hold {int((~np.isfinite(scores)).sum())} NaN/inf values")
    return Decoded(scores, *side_values(parts, shape[0], compact=False))


FLOAT32 = PayloadCodec("float32", _float32_encode, _float32_decode,
                       lambda parts, meta, shape: side_weights(parts, shape[0], compact=False),
                       probabilities=False)


def _codec_of(meta: dict) -> PayloadCodec:
    from flower_gd.payload_codecs import REGISTRY  # the registry imports this module

    name = meta.get("codec")
    if not isinstance(name, str) or name not in REGISTRY:
        raise PayloadError(f"unsupported codec {name!r}; known: {list(REGISTRY)}")
    return REGISTRY[name]


# ------------------------------------------------------------------ encode
def encode_payload(payload: InferencePayload, codec: Codec | None = None,
                   content: RecordDict | None = None, key: str = PAYLOAD_KEY) -> RecordDict:
    """Put a payload into a RecordDict under `key`, encoded with `codec`."""
    codec = codec or Codec()
    spec = _codec_of({"codec": codec.name})
    if payload.kind == "logits" and spec.probabilities:
        raise ValueError(f"codec {codec.name} quantizes probabilities; it cannot carry logits "
                         "(use inference-output=probs, or codec float32/float16)")
    content = RecordDict() if content is None else content
    meta: dict = {"counter": int(payload.counter), "kind": payload.kind, "codec": codec.name}
    arrays, zipped = {}, []
    for name, arr in spec.encode(payload, codec, meta).items():
        raw = np.ascontiguousarray(arr)
        packed = deflate(raw.tobytes()) if codec.compress else b""
        if codec.compress and len(packed) <= COMPRESS_WHEN * raw.nbytes:
            arrays[name] = np.frombuffer(packed, dtype=np.uint8)
            zipped.append(name)
        else:
            arrays[name] = raw
    if zipped:
        meta["zlib"] = zipped
    content[key] = seal_payload(arrays, meta)
    return content


# ------------------------------------------------------------------ the envelope
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


# ------------------------------------------------------------------ decode
def _zipped(meta: dict) -> set:
    """The names of the parts the metadata says are deflated."""
    listed = meta.get("zlib", [])
    names = listed if isinstance(listed, list) else [listed]
    if not all(isinstance(name, str) for name in names):
        raise PayloadError(f"payload zlib list {listed!r} names no parts")
    return set(names)


def decode_payload(content: RecordDict, expected_shape: tuple[int, int], key: str = PAYLOAD_KEY,
                   expect: Expect | None = None) -> InferencePayload:
    """Read and validate a peer's payload (any codec); scores come back as float32 (n, C).

    Whatever the codec, probabilities come back finite, non-negative and summing to 1 per
    row, or the payload is refused: no input decodes to NaN.

    Raises
    ------
    PayloadError
        A record that is not a well-formed payload (`open_payload`), an unknown codec, a
        kind the receiver does not mix, a counter out of range, parts the receiver needs
        (`expect`) missing, parts the codec does not write, or whatever the codec's decoder
        refuses (wrong shape or dtype, data that does not inflate to the expected size,
        NaN/inf, out-of-range labels, ...); then the envelope's checks of every codec's
        output: probabilities finite, non-negative and normalised, confidences in [0, 1].
    """
    expect = expect or Expect()
    arrays, meta = open_payload(content, key)
    spec = _codec_of(meta)
    kind = meta.get("kind")
    if kind not in ("probs", "logits"):
        raise PayloadError(f"unknown score kind {kind!r}")
    if spec.probabilities and kind != "probs":
        raise PayloadError(f"codec {spec.name} carries probabilities, but the payload says {kind}")
    if expect.kind is not None and kind != expect.kind:
        raise PayloadError(f"the payload carries {kind}, this receiver mixes {expect.kind}")
    counter = meta.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_COUNTER:
        raise PayloadError(f"counter {counter!r} out of range [1, {MAX_COUNTER}]")
    n, c = (int(s) for s in expected_shape)
    parts = Parts(arrays, meta, spec.name)
    got = spec.decode(parts, meta, (n, c), str(kind))
    extra = parts.untaken()
    if extra:
        raise PayloadError(f"payload holds arrays no {spec.name} payload has: {extra}")
    for wanted, value, needed in ((expect.confidence, got.confidence, "confidence"),
                                  (expect.sample_weights, got.sample_weights, "weights")):
        if wanted and value is None:
            raise PayloadError(f"payload lacks the {needed} this receiver needs")
    scores = np.asarray(got.scores, dtype=np.float32)
    if kind == "probs":  # the postcondition of every codec, checked rather than trusted
        check_probs(scores)
    if got.confidence is not None:
        conf = got.confidence
        if not np.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
            raise PayloadError("confidence values must be finite and in [0, 1]")
    if got.sample_weights is not None:
        w = got.sample_weights
        if not np.isfinite(w).all() or (w < 0).any() or w.max(initial=0.0) > MAX_WEIGHT:
            raise PayloadError("weights must be finite, >= 0 and at most 1e30")
    return InferencePayload(scores=scores, counter=counter, kind=str(kind),
                            confidence=got.confidence, sample_weights=got.sample_weights)


def decode_sample_weights(content: RecordDict, expected_shape: tuple[int, int],
                          key: str = PAYLOAD_KEY) -> np.ndarray:
    """Only the per-sample weights W_j of a payload, validated on their own: a push-sum
    receiver keeps the mass of a payload whose scores it refused (see gossip-adaptive).

    Raises
    ------
    PayloadError
        When the payload has no valid weights of length n, for (n, C) `expected_shape`.
    """
    arrays, meta = open_payload(content, key)
    spec = _codec_of(meta)
    n, c = (int(s) for s in expected_shape)
    weights = spec.weights(Parts(arrays, meta, spec.name), meta, (n, c))
    if not np.isfinite(weights).all() or (weights < 0).any() or \
            weights.max(initial=0.0) > MAX_WEIGHT:
        raise PayloadError("weights must be finite, >= 0 and at most 1e30")
    return weights
