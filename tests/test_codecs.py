"""Payload codecs: round trips, exact byte counts, and every decode-validation error."""

import json
import zlib

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from payload_edit import blob, header_and_body, meta, parts, rewrite, write_blob, write_header

from flower_gd.codecs import (
    PAYLOAD_KEY,
    Codec,
    Expect,
    InferencePayload,
    PayloadError,
    decode_payload,
    deflate,
    encode_payload,
)
from flower_gd.metering import object_nbytes
from flower_gd.payload_codecs import CODECS
from flower_gd.payload_codecs.hard4 import (
    LOG_WEIGHT_SPAN,
    NIBBLE,
    nibble_weights,
    unnibble_weights,
)
from flower_gd.payload_codecs.hard4p1 import top_floor, top_levels
from flower_gd.payload_codecs.uint8 import quantize_probs

PROBS = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], dtype=np.float32)
RAW = Codec(compress=False)


def _content(scores=PROBS, counter=2, kind="probs", codec="float32"):
    content = encode_payload(InferencePayload(np.asarray(scores, dtype=np.float32), 1, kind),
                             RAW)
    return rewrite(content, counter=counter, kind=kind, codec=codec)


def encoded_nbytes(content, key=PAYLOAD_KEY):
    """Bytes of a payload's arrays as encoded (after compression), without Flower's framing."""
    return sum(a.nbytes for a in parts(content, key).values())


def _probs(n=500, c=10, seed=0):
    """Softmax outputs of a confident model: what nodes really send."""
    logits = np.random.default_rng(seed).normal(0, 4, size=(n, c))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_round_trip_is_exact():
    payload = decode_payload(_content(), expected_shape=(2, 3))
    np.testing.assert_array_equal(payload.scores, PROBS)
    assert payload.counter == 2 and payload.kind == "probs"


def test_logits_may_be_negative():
    decode_payload(_content(scores=[[-3.0, 2.0, 1.0], [0.0, -1.0, 5.0]], kind="logits"), (2, 3))


@pytest.mark.parametrize("mutate, match", [
    (lambda: _content(scores=np.ones((3, 3)) / 3), "shape"),
    (lambda: _content(scores=[[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), "NaN/inf"),
    (lambda: _content(scores=[[np.inf, 0, 0], [0.2, 0.3, 0.5]], kind="logits"), "NaN/inf"),
    (lambda: _content(scores=[[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]]), "negative"),
    (lambda: _content(scores=[[0.5, 0.2, 0.1], [0.2, 0.3, 0.5]]), "do not sum to 1"),
    (lambda: _content(counter=0), "counter 0 out of range"),
    (lambda: _content(counter=10**9), "out of range"),
    (lambda: _content(kind="votes"), "unknown score kind"),
    (lambda: _content(codec="zip"), "unsupported codec"),
    (lambda: RecordDict(), "lacks"),
])
def test_invalid_payloads_are_rejected_with_the_reason(mutate, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(mutate(), expected_shape=(2, 3))


def test_wrong_dtype_is_rejected():
    content = rewrite(_content(), arrays={"scores": PROBS.astype(np.float64)})
    with pytest.raises(PayloadError, match="dtype '<f8'"):
        decode_payload(content, (2, 3))


# ---------------------------------------------------------------- every codec
@pytest.mark.parametrize("codec, max_error", [
    ("float32", 0.0), ("float16", 1e-3), ("uint8", 2.5 / 255), ("topk", None), ("hard", None)])
def test_round_trip_of_every_codec(codec, max_error):
    probs = _probs()
    w = np.random.default_rng(1).uniform(0.01, 50, size=len(probs))
    conf = np.random.default_rng(2).uniform(0, 1, size=len(probs))
    got = decode_payload(encode_payload(InferencePayload(probs, 3, "probs", conf, w),
                                        Codec(codec)), probs.shape)
    assert got.scores.dtype == np.float32 and got.scores.shape == probs.shape
    np.testing.assert_allclose(got.scores.sum(1), 1.0, atol=1e-5)
    assert got.counter == 3
    agree = (got.scores.argmax(1) == probs.argmax(1)).mean()
    assert agree == 1.0 if codec in ("float32", "hard") else agree >= 0.98  # near-ties may flip
    if max_error is not None:
        assert np.abs(got.scores - probs).max() <= max_error + 1e-7
    exact = codec == "float32"
    np.testing.assert_allclose(got.sample_weights, w, rtol=1e-6 if exact else 2e-3)
    np.testing.assert_allclose(got.confidence, conf, atol=1e-7 if exact else 0.5 / 255 + 1e-7)


def test_topk_keeps_the_k_largest_and_spreads_the_rest():
    probs = np.array([[0.6, 0.3, 0.06, 0.04]], dtype=np.float32)
    got = decode_payload(encode_payload(InferencePayload(probs, 1, "probs"),
                                        Codec("topk", topk=2, compress=False)), (1, 4)).scores
    top = np.floor(np.array([0.6, 0.3]) * 255) / 255
    rest = (1 - top.sum()) / 2
    np.testing.assert_allclose(got[0], [top[0], top[1], rest, rest], atol=1e-6)


def test_hard_labels_decode_to_one_hot():
    got = decode_payload(encode_payload(InferencePayload(PROBS, 1, "probs"), Codec("hard")),
                         (2, 3)).scores
    np.testing.assert_array_equal(got, [[1, 0, 0], [0, 1, 0]])


def test_uint8_quantization_sums_to_255_exactly():
    q = quantize_probs(_probs(2000, 10, seed=3))
    assert q.dtype == np.uint8 and (q.sum(1, dtype=np.int64) == 255).all()


@pytest.mark.parametrize("codec, per_sample", [
    ("float32", 4 * 10), ("float16", 2 * 10), ("uint8", 10), ("topk", 2 * 2), ("hard", 1)])
def test_exact_encoded_bytes_without_compression(codec, per_sample):
    n = 300
    content = encode_payload(InferencePayload(_probs(n), 1, "probs"), Codec(codec, compress=False))
    assert encoded_nbytes(content) == n * per_sample
    # with per-sample weights: 4 bytes (float32) or 2 (float16 log W) more per sample
    content = encode_payload(InferencePayload(_probs(n), 1, "probs", sample_weights=np.ones(n)),
                             Codec(codec, compress=False))
    assert encoded_nbytes(content) == n * (per_sample + (4 if codec == "float32" else 2))


@pytest.mark.parametrize("codec", CODECS)
def test_compression_is_lossless_and_only_kept_where_it_pays(codec):
    probs = _probs(1000)
    plain = encode_payload(InferencePayload(probs, 1, "probs"), Codec(codec, compress=False))
    packed = encode_payload(InferencePayload(probs, 1, "probs"), Codec(codec))
    assert encoded_nbytes(packed) <= encoded_nbytes(plain)
    zipped = list(meta(packed).get("zlib", []))
    for name in zipped:
        raw = parts(plain)[name].tobytes()
        assert len(deflate(raw)) == parts(packed)[name].nbytes
        assert len(deflate(raw)) <= len(zlib.compress(raw, 6))
    np.testing.assert_array_equal(decode_payload(packed, probs.shape).scores,
                                  decode_payload(plain, probs.shape).scores)


@pytest.mark.usefixtures("task_identity")
def test_the_meter_counts_the_encoded_bytes():
    """Switching float32 -> float16 (no compression) shrinks the message by exactly 2 n C."""
    # payloads of about 9400 and 4900 bytes: every length field around them (the bytes value,
    # its config value, its map entry: two-byte varints; Flower's object header: 4 decimal
    # digits) has the same width in both
    n, c = 225, 10
    sizes = {}
    for codec in ("float32", "float16"):
        content = encode_payload(InferencePayload(_probs(n, c), 1, "probs"),
                                 Codec(codec, compress=False))
        # the objects alone: the calls that move them add the same bytes to both, but for
        # the content's length field (24146 needs one more varint byte than 12146)
        sizes[codec] = object_nbytes(Message(content=content, dst_node_id=1,
                                             message_type="query.inference"))
    meta_delta = len("float32") - len("float16")  # the codec name in the metadata: same length
    assert sizes["float32"] - sizes["float16"] == 2 * n * c + meta_delta


def _encoded(codec="uint8", **kw):
    return encode_payload(InferencePayload(_probs(4, 3), 1, "probs", **kw),
                          Codec(codec, compress=False))


def _replace(content, name, array):
    return rewrite(content, arrays={**parts(content), name: np.asarray(array)})


def _set_meta(content, **kw):
    return rewrite(content, **kw)


@pytest.mark.parametrize("make, match", [
    (lambda: _replace(_encoded(), "scores", np.zeros((4, 3), np.uint8)), "sum to 255"),
    (lambda: _replace(_encoded(), "scores", np.zeros((5, 3), np.uint8)), "shape"),
    (lambda: _replace(_encoded("hard"), "labels", np.array([0, 1, 7, 2], np.uint8)),
     "labels out of range"),
    (lambda: _replace(_encoded("topk"), "topk-index", np.array([[0, 0]] * 4, np.uint8)),
     "repeat"),
    (lambda: _replace(_encoded("topk"), "topk-index", np.array([[0, 9]] * 4, np.uint8)),
     "out of range"),
    (lambda: _replace(_encoded("topk"), "topk-value", np.array([[200, 200]] * 4, np.uint8)),
     "more than 1"),
    (lambda: _set_meta(_encoded("topk"), topk=9), "topk 9 out of range"),
    (lambda: _set_meta(_encoded("float16"), kind="logits",
                       codec="hard"), "carries probabilities"),
    (lambda: _set_meta(_encoded(), zlib=["scores"]), "not valid zlib"),
    (lambda: _replace(_set_meta(_encoded(), zlib=["scores"]), "scores",
                      np.frombuffer(zlib.compress(bytes(1000)), np.uint8)), "wrong size"),
    (lambda: _replace(_encoded("float32", sample_weights=np.ones(4)), "weights",
                      np.array([1, -1, 1, 1], np.float32)), "weights are negative"),
    (lambda: _replace(_encoded("float16", sample_weights=np.ones(4)), "weights",
                      np.array([1, np.nan, 1, 1], np.float16)), "weights hold NaN"),
    (lambda: _replace(_encoded("float32", confidence=np.ones(4)), "confidence",
                      np.array([1, 2, 1, 1], np.float32)), r"in \[0, 1\]"),
])
def test_every_codec_error_names_the_problem(make, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(make(), (4, 3))


def test_logits_cannot_use_a_probability_codec():
    with pytest.raises(ValueError, match="cannot carry logits"):
        encode_payload(InferencePayload(PROBS, 1, "logits"), Codec("uint8"))


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="codec 'zip' unknown"):
        Codec("zip")


# ---------------------------------------------------------------- hard4: 4 bits a sample
def test_hard4_round_trip_keeps_labels_and_each_side_value_within_a_level():
    probs = _probs(1001)  # odd: the packed label pairs need a pad nibble
    top = 3.0
    log_w = np.random.default_rng(1).uniform(top - LOG_WEIGHT_SPAN, top, size=len(probs))
    log_w[0] = top
    w = np.exp(log_w)
    got = decode_payload(encode_payload(InferencePayload(probs, 3, "probs", sample_weights=w),
                                        Codec("hard4")), probs.shape)
    np.testing.assert_array_equal(got.scores, np.eye(10)[probs.argmax(1)])
    half_step = LOG_WEIGHT_SPAN / (NIBBLE - 2) / 2
    assert np.abs(np.log(got.sample_weights) - log_w).max() <= half_step + 1e-9
    assert got.sample_weights[0] == pytest.approx(np.exp(top))  # the largest is exact
    conf = np.random.default_rng(2).uniform(0, 1, size=len(probs))
    got = decode_payload(encode_payload(InferencePayload(probs, 3, "probs", conf),
                                        Codec("hard4")), probs.shape)
    assert np.abs(got.confidence - conf).max() <= 0.5 / 15 + 1e-7
    assert got.sample_weights is None
    got = decode_payload(encode_payload(InferencePayload(probs, 3, "probs"), Codec("hard4")),
                         probs.shape)
    np.testing.assert_array_equal(got.scores.argmax(1), probs.argmax(1))
    assert got.confidence is None and got.sample_weights is None


def test_hard4_weights_far_below_the_largest_go_as_zero():
    step = LOG_WEIGHT_SPAN / (NIBBLE - 2)
    w = np.array([1.0, np.exp(-LOG_WEIGHT_SPAN), np.exp(-LOG_WEIGHT_SPAN - 0.6 * step), 0.0])
    level, top = nibble_weights(w)
    assert top == 0.0 and level.tolist() == [15, 1, 0, 0]
    np.testing.assert_allclose(unnibble_weights(level, top),
                               [1.0, np.exp(-LOG_WEIGHT_SPAN), 0.0, 0.0])
    level, top = nibble_weights(np.zeros(3))  # no mass at all: all zero, no log of 0
    assert level.tolist() == [0, 0, 0] and top == 0.0


def test_hard4_bytes_are_one_per_sample_with_side_values_and_half_without():
    n = 301
    for kw, size in (({}, (n + 1) // 2), ({"sample_weights": np.ones(n)}, n),
                     ({"confidence": np.ones(n) / 2}, n)):
        content = encode_payload(InferencePayload(_probs(n), 1, "probs", **kw),
                                 Codec("hard4", compress=False))
        assert encoded_nbytes(content) == size


def test_hard4_refuses_what_it_cannot_carry():
    with pytest.raises(ValueError, match="17 classes > 16"):
        encode_payload(InferencePayload(_probs(4, 17), 1, "probs"), Codec("hard4"))
    with pytest.raises(ValueError, match="weights or confidences, not both"):
        encode_payload(InferencePayload(_probs(4, 3), 1, "probs", np.ones(4), np.ones(4)),
                       Codec("hard4"))


def _hard4(**kw):
    return encode_payload(InferencePayload(_probs(4, 3), 1, "probs", **kw),
                          Codec("hard4", compress=False))


@pytest.mark.parametrize("make, match", [
    (lambda: _replace(_hard4(sample_weights=np.ones(4)), "symbols",
                      np.array([0x0F, 0x1F, 0x3F, 0x2F], np.uint8)), "labels out of range"),
    (lambda: _replace(_hard4(), "labels4", np.array([0x01, 0xC0], np.uint8)),
     "labels out of range"),
    (lambda: _replace(_hard4(), "labels4", np.zeros(3, np.uint8)), "shape"),
    (lambda: _set_meta(_hard4(sample_weights=np.ones(4)), side="votes"), "side 'votes'"),
    (lambda: _set_meta(_hard4(sample_weights=np.ones(4)), **{"log-top": float("nan")}),
     "not valid JSON"),  # a NaN in the metadata is not JSON
    (lambda: _set_meta(_hard4(sample_weights=np.ones(4)), **{"log-top": 1e6}), "log-top"),
    (lambda: _replace(_hard4(sample_weights=np.ones(4)), "weights", np.ones(4, np.float32)),
     "arrays no hard4 payload has"),
    (lambda: _hard4(confidence=np.ones(4)), "lacks the weights"),
])
def test_every_hard4_error_names_the_problem(make, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(make(), (4, 3), expect=Expect(sample_weights=True))


def test_hard4_odd_labels_need_a_zero_pad_nibble_and_tiny_weights_still_decode():
    content = encode_payload(InferencePayload(_probs(3, 3), 1, "probs"),
                             Codec("hard4", compress=False))
    decode_payload(content, (3, 3))
    packed = parts(content)["labels4"]
    packed[-1] |= 0x02
    with pytest.raises(PayloadError, match="pad nibble"):
        decode_payload(_replace(content, "labels4", packed), (3, 3))
    tiny = decode_payload(_hard4(sample_weights=np.full(4, 1e-40)), (4, 3),
                          expect=Expect(sample_weights=True)).sample_weights
    np.testing.assert_allclose(tiny, 1e-40, rtol=0.35)  # within a level of what was sent
    with pytest.raises(ValueError, match="finite and >= 0"):
        _hard4(sample_weights=np.array([1.0, np.nan, 1.0, 1.0]))


def test_hard4_weights_decode_alone_for_push_sum():
    from flower_gd.codecs import decode_sample_weights
    w = np.array([2.0, 1.0, 0.5, 0.0])
    content = _hard4(sample_weights=w)
    np.testing.assert_allclose(decode_sample_weights(content, (4, 3)),
                               decode_payload(content, (4, 3)).sample_weights)
    with pytest.raises(PayloadError, match="lacks the weights"):
        decode_sample_weights(_hard4(), (4, 3))


# ------------------------------------------------- hard4p1: hard4 plus one bit of the top class
def _hard4p1(n=4, c=3, **kw):
    return encode_payload(InferencePayload(_probs(n, c), 1, "probs", **kw),
                          Codec("hard4p1", compress=False))


def test_hard4p1_sends_the_label_and_the_nearer_of_two_top_probabilities():
    probs = _probs(1003, 10)  # 1003: the packed bits need pad bits
    w = np.exp(np.random.default_rng(3).uniform(-4, 2, len(probs)))
    content = encode_payload(InferencePayload(probs, 3, "probs", sample_weights=w),
                             Codec("hard4p1"))
    got = decode_payload(content, probs.shape, expect=Expect(sample_weights=True))
    hard4 = decode_payload(encode_payload(InferencePayload(probs, 3, "probs", sample_weights=w),
                                          Codec("hard4")), probs.shape)
    np.testing.assert_array_equal(got.scores.argmax(1), probs.argmax(1))  # the label decodes
    np.testing.assert_array_equal(got.sample_weights, hard4.sample_weights)  # hard4's weights
    np.testing.assert_allclose(got.scores.sum(1), 1.0, atol=1e-6)
    lo, hi = meta(content)["top-levels"]
    assert top_floor(10) <= lo < hi <= 1.0
    sent = got.scores.max(1)
    assert np.minimum(np.abs(sent - lo), np.abs(sent - hi)).max() < 1e-6  # one of the two
    top = probs.max(1).astype(np.float64)
    nearer = np.where(np.abs(top - lo) <= np.abs(top - hi), lo, hi)
    np.testing.assert_allclose(sent, nearer, atol=1e-6)  # each sample gets the nearer value
    # off the label the rest of the sample's mass is spread evenly
    rest = np.where(np.eye(10, dtype=bool)[probs.argmax(1)], np.nan, got.scores)
    np.testing.assert_allclose(np.nanmax(rest, 1), np.nanmin(rest, 1), atol=1e-7)


def test_hard4p1_levels_are_the_centroids_of_their_cells_above_the_floor():
    """Lloyd-Max's fixed point: each value is the mean of the probabilities sent as it; a
    value the floor holds up sits at the floor, and its cell's mean is below it."""
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(0.35, 0.6, 300), rng.uniform(0.9, 1.0, 700)])
    lo, hi = top_levels(p, top_floor(10))
    cut = (lo + hi) / 2
    assert lo == pytest.approx(p[p <= cut].mean()) and hi == pytest.approx(p[p > cut].mean())
    floor = top_floor(3)  # 0.375: most of the low cell lies under it
    q = np.concatenate([rng.uniform(0.34, 0.36, 500), rng.uniform(0.95, 1.0, 500)])
    lo, hi = top_levels(q, floor)
    assert lo == floor and hi == pytest.approx(q[q > (lo + hi) / 2].mean())
    assert top_levels(np.zeros(0), floor).tolist() == [floor, floor]  # no samples: any


def test_hard4p1_costs_one_bit_a_sample_more_than_hard4():
    n = 301
    for kw in ({}, {"sample_weights": np.ones(n)}, {"confidence": np.ones(n) / 2}):
        sizes = [encoded_nbytes(encode_payload(InferencePayload(_probs(n), 1, "probs", **kw),
                                               Codec(c, compress=False)))
                 for c in ("hard4", "hard4p1")]
        assert sizes[1] - sizes[0] == (n + 7) // 8


@pytest.mark.parametrize("codec", CODECS)
def test_an_empty_payload_decodes_to_no_samples(codec):
    empty = encode_payload(InferencePayload(np.zeros((0, 10), np.float32), 1, "probs",
                                            sample_weights=np.zeros(0)), Codec(codec))
    got = decode_payload(empty, (0, 10), expect=Expect(sample_weights=True))
    assert got.scores.shape == (0, 10) and got.sample_weights.shape == (0,)


@pytest.mark.parametrize("make, match", [
    (lambda: _set_meta(_hard4p1(), **{"top-levels": [0.2, 0.9]}), "top-levels"),  # < floor
    (lambda: _set_meta(_hard4p1(), **{"top-levels": [0.5, 1.5]}), "top-levels"),
    (lambda: _set_meta(_hard4p1(), **{"top-levels": [0.5]}), "top-levels"),
    (lambda: _set_meta(_hard4p1(), **{"top-levels": ["0.5", 0.9]}), "top-levels"),
    (lambda: _set_meta(_hard4p1(), **{"top-levels": None}), "top-levels"),
    (lambda: _replace(_hard4p1(), "top-bit", np.array([0xFF], np.uint8)), "pad bits"),
    (lambda: _replace(_hard4p1(), "top-bit", np.zeros(2, np.uint8)), "shape"),
    (lambda: _replace(_hard4(), "top-bit", np.zeros(1, np.uint8)), "no hard4 payload has"),
])
def test_every_hard4p1_error_names_the_problem(make, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(make(), (4, 3))


def test_deflate_nears_the_order0_entropy_of_independent_symbols():
    """hard4-like bytes (a skewed label and weight level, drawn independently): zlib's
    default strategy spends its LZ77 codes on matches that do not pay; `deflate` keeps the
    smaller stream, here within 3% of the order-0 entropy, and zlib reads it back."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(64, 0.3))
    raw = rng.choice(64, size=6000, p=p).astype(np.uint8).tobytes()
    _, counts = np.unique(np.frombuffer(raw, np.uint8), return_counts=True)
    freq = counts / counts.sum()
    entropy_bytes = -(freq * np.log2(freq)).sum() * 6000 / 8
    assert zlib.decompress(deflate(raw)) == raw
    assert len(deflate(raw)) <= 1.03 * entropy_bytes + 64  # 64: the code table
    assert len(deflate(raw)) < len(zlib.compress(raw, 6))


# ---------------------------------------------------------------- the payload's layout
def _sealed():
    return encode_payload(InferencePayload(_probs(4, 3), 2, "probs"), RAW)


def _garbled_header():
    header, body = header_and_body(_sealed())
    return write_header(_sealed(), b"\xff" * len(header), body)


@pytest.mark.parametrize("make, match", [
    (lambda: write_blob(_sealed(), blob(_sealed()), name="scores"), "expected only 'payload'"),
    (lambda: write_blob(_sealed(), blob(_sealed()).decode("latin-1")), "holds str, not bytes"),
    (lambda: write_blob(_sealed(), b"FGD1"), "shorter than its header"),
    (lambda: write_blob(_sealed(), b"NOPE" + blob(_sealed())[4:]), "not b'FGD1'"),
    (_garbled_header, "not valid JSON"),
    (lambda: write_blob(_sealed(), b"FGD1\xff\xff\x00\x00" + bytes(64)), "header length"),
    (lambda: write_blob(_sealed(), blob(_sealed())[:-1]), "runs past the end"),
    (lambda: write_blob(_sealed(), blob(_sealed()) + b"\x00"), "1 bytes its header"),
    (lambda: _replace(_sealed(), "scores", np.zeros((4, 3), ">f4")), "dtype '>f4'"),
    (lambda: _replace(_sealed(), "scores", np.zeros((4, 3), np.complex64)), "dtype '<c8'"),
    (lambda: _replace(_sealed(), "scores", np.zeros((4, 3, 1), np.float32)), "invalid shape"),
    (lambda: _set_meta(_sealed(), zlib=[3]), "names no parts"),
])
def test_a_malformed_payload_layout_is_refused_with_the_reason(make, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(make(), (4, 3))


@pytest.mark.parametrize("dtype", ["f4,(", "i4,)", "10000000000u1", "(2147483647,2147483647)f8",
                                   "{'names':['a'],'formats':['i4']}", "V4", "O", "S4", "b1",
                                   "<M8", "<f16", "a"])
def test_a_part_type_numpy_would_parse_oddly_is_refused_by_name(dtype):
    """Found by review: numpy's dtype parser raised SyntaxError and ValueError on strings a
    peer chose; the header's type is now looked up in a table."""
    header, body = header_and_body(_sealed())
    odd = write_header(_sealed(), header.replace('"<f4"', json.dumps(dtype)), body)
    with pytest.raises(PayloadError, match="parts are one of"):
        decode_payload(odd, (4, 3))


def test_the_header_lists_each_part_once_and_must_be_a_shallow_object_of_finite_numbers():
    header, body = header_and_body(_sealed())
    twice = header.replace('"parts":[', '"parts":[["scores","<f4",[0]],')
    deep = "[" * 1000 + "]" * 1000  # json's recursion limit, found by review
    infinite = header.replace('"counter":2', '"counter":2,"log-top":1e999')
    for text, match in ((twice, "twice"), ("[1, 2]", "an object with 'meta' and 'parts'"),
                        (deep, "nests more than"), (infinite, "not valid JSON")):
        with pytest.raises(PayloadError, match=match):
            decode_payload(write_header(_sealed(), text, body), (4, 3))


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("codec", ["float32", "hard4", "hard4p1"])
@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_payload_in_one_config_record_costs_less_on_the_wire_than_in_arrays(codec, direction):
    """What the layout saves (module docstring) against the same bytes as one Array in an
    ArrayRecord (the layout before: three Flower objects instead of one, 618 bytes going
    down and 806 going up), and against each part as its own numpy Array beside a
    ConfigRecord of metadata (the layout before that: more again, an .npy header a part)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from flower_gd.metering import transfer_nbytes
    probs = _probs(6000, 10)
    sealed = encode_payload(InferencePayload(probs, 3, "probs", sample_weights=np.ones(6000)),
                            Codec(codec))
    data = blob(sealed)
    one_array = RecordDict({PAYLOAD_KEY: ArrayRecord({"payload": Array(
        dtype="uint8", shape=(len(data),), stype="flower-gd.payload.v1", data=data)})})
    separate = RecordDict({PAYLOAD_KEY: ArrayRecord({n: Array(np.ascontiguousarray(a))
                                                     for n, a in parts(sealed).items()}),
                           "inference-meta": ConfigRecord(meta(sealed))})
    size = {name: transfer_nbytes(Message(content=c, dst_node_id=1 << 60,
                                          message_type="train.gossip"), direction)
            for name, c in (("sealed", sealed), ("one-array", one_array),
                            ("separate", separate))}
    assert size["one-array"] - size["sealed"] >= (600 if direction == "down" else 780), size
    assert size["separate"] > size["one-array"], size
    np.testing.assert_array_equal(decode_payload(sealed, probs.shape).scores.argmax(1),
                                  probs.argmax(1))


# ------------------------------------- hard4p2r1-ac: four top levels, a runner-up, arithmetic-coded
def _ac(n=500, c=10, seed=5, **kw):
    probs = _probs(n, c, seed=seed)
    return probs, encode_payload(InferencePayload(probs, 2, "probs", **kw),
                                 Codec("hard4p2r1-ac"))


def test_hard4p2r1_ac_sends_the_label_a_top_level_and_the_runner_up_where_least_sure():
    from flower_gd.payload_codecs.hard4p2r1_ac import (
        LEVELS,
        WEIGHT_LEVELS,
        WEIGHT_SPAN,
        lloyd_levels,
    )
    log_w = np.random.default_rng(3).uniform(-4, 2, 1001)
    log_w[0] = 2.0
    probs, content = _ac(1001, sample_weights=np.exp(log_w))
    got = decode_payload(content, probs.shape, expect=Expect(sample_weights=True))
    np.testing.assert_array_equal(got.scores.argmax(1), probs.argmax(1))  # the label decodes
    # each weight within half a level (0.4 nats) of what was sent, the largest exactly
    half_step = WEIGHT_SPAN / (WEIGHT_LEVELS - 1) / 2
    assert np.abs(np.log(got.sample_weights) - log_w).max() <= half_step + 1e-9
    assert got.sample_weights[0] == pytest.approx(np.exp(2.0))
    levels = np.array(meta(content)["top-levels"])
    assert len(levels) == LEVELS and top_floor(10) <= levels[0] and levels[-1] <= 1.0
    assert (np.diff(levels) >= 0).all()
    expected, index = lloyd_levels(probs.max(1).astype(np.float64), LEVELS, top_floor(10))
    np.testing.assert_allclose(levels, expected)
    np.testing.assert_allclose(got.scores.max(1), levels[index], atol=1e-6)  # nearest level
    # the lowest level's samples carry their runner-up at the payload's one share (held
    # below the top and within the mass left), the others spread their rest evenly
    low = index == 0
    assert low.any() and (~low).any()
    ranked = np.argsort(-probs, axis=1, kind="stable")
    rows = np.arange(len(probs))
    share = meta(content)["runner-share"]
    assert share == pytest.approx(probs[low, ranked[low, 1]].mean())
    held = np.minimum(np.minimum(share, 0.999 * levels[0]), 1 - levels[0])
    np.testing.assert_allclose(got.scores[low, ranked[low, 1]], held, atol=1e-6)
    assert (got.scores[low].argsort(1)[:, -2] == ranked[low, 1]).all()
    rest = np.where(np.eye(10, dtype=bool)[probs.argmax(1)], np.nan, got.scores)[~low]
    np.testing.assert_allclose(np.nanmax(rest, 1), np.nanmin(rest, 1), atol=1e-7)
    assert np.abs(got.scores[rows, ranked[:, 0]] - probs.max(1)).mean() < np.abs(
        decode_payload(encode_payload(InferencePayload(probs, 2, "probs"), Codec("hard4p1")),
                       probs.shape).scores.max(1) - probs.max(1)).mean()  # finer than hard4p1's


def test_hard4p2r1_ac_carries_confidences_or_nothing_and_decodes_weights_alone():
    from flower_gd.codecs import decode_sample_weights
    conf = np.random.default_rng(2).uniform(0, 1, 300)
    probs, content = _ac(300, confidence=conf)
    got = decode_payload(content, probs.shape, expect=Expect(confidence=True))
    assert np.abs(got.confidence - conf).max() <= 0.5 / 15 + 1e-7
    assert got.sample_weights is None
    probs, content = _ac(301)
    got = decode_payload(content, probs.shape)
    np.testing.assert_array_equal(got.scores.argmax(1), probs.argmax(1))
    assert got.confidence is None and got.sample_weights is None
    w = np.random.default_rng(4).uniform(0.1, 9, 300)
    probs, content = _ac(300, sample_weights=w)
    np.testing.assert_array_equal(decode_sample_weights(content, probs.shape),
                                  decode_payload(content, probs.shape).sample_weights)
    with pytest.raises(PayloadError, match="lacks the weights"):
        decode_sample_weights(_ac(300, confidence=conf)[1], probs.shape)


def test_hard4p2r1_ac_codes_its_fields_in_fewer_bits_than_their_entropies_add_up_to():
    """The coder learns each field given the label: on beliefs whose weight and top level
    follow the label, the stream is below the sum of the fields' order-0 entropies (what
    coding each field on its own could reach at best)."""
    from flower_gd.payload_codecs.hard4p2r1_ac import LEVELS, lloyd_levels, weight_levels
    rng = np.random.default_rng(6)
    n, c = 6000, 10
    labels = rng.choice(c, size=n, p=rng.dirichlet(np.full(c, 2.0)))
    sure = labels < 5  # half the classes confident, the other half not
    top = np.where(sure, rng.uniform(0.9, 1.0, n), rng.uniform(0.3, 0.6, n))
    probs = np.full((n, c), 0.0)
    probs[np.arange(n), labels] = top
    runner = (labels + 1 + rng.integers(0, 2, n)) % c
    probs[np.arange(n), runner] = (1 - top) * 0.4  # below the top: the label stays
    probs += ((1 - probs.sum(1)) / c)[:, None]
    w = np.exp(np.where(sure, 1.0, -3.0) + rng.normal(0, 0.3, n))
    content = encode_payload(InferencePayload(probs.astype(np.float32), 1, "probs",
                                              sample_weights=w), Codec("hard4p2r1-ac"))
    stream_bits = 8 * parts(content)["stream"].nbytes

    def entropy(values):
        _, counts = np.unique(values, return_counts=True)
        f = counts / counts.sum()
        return -(f * np.log2(f)).sum() * len(values)

    _, index = lloyd_levels(probs.max(1), LEVELS, top_floor(c))
    order0 = (entropy(labels) + entropy(weight_levels(w)[0]) + entropy(index)
              + entropy(runner[index == 0]))
    assert stream_bits < order0
    got = decode_payload(content, probs.shape)
    np.testing.assert_array_equal(got.scores.argmax(1), labels)


def _ac_small(**kw):
    return encode_payload(InferencePayload(_probs(40, 6, seed=9), 1, "probs",
                                           sample_weights=np.ones(40)), Codec("hard4p2r1-ac"))


def _ac_rows(change):
    """An -ac payload whose stream codes other fields (`change` maps the honest rows, label,
    side level, top level, runner-up or -1, to the rows sent): a peer coding what it likes."""
    from flower_gd.payload_codecs.hard4p2r1_ac import CONTEXTS, _present, _sizes
    from flower_gd.payload_codecs.range_coder import decode_fields, encode_fields
    content = _ac_small()
    sizes = _sizes(6, "weights")
    rows = decode_fields(bytes(parts(content)["stream"]), 40, sizes, CONTEXTS,
                         _present("weights"))
    return _ac_stream(content, encode_fields(change(rows), sizes, CONTEXTS))


def _ac_stream(content, data):
    return _replace(content, "stream", np.frombuffer(bytes(data), np.uint8))


@pytest.mark.parametrize("make, match", [
    (lambda: _ac_stream(_ac_small(), bytes(parts(_ac_small())["stream"]) + b"\x00"),
     "not the coding"),
    (lambda: _ac_stream(_ac_small(), bytes(parts(_ac_small())["stream"])[:-3]),
     "not the coding"),
    (lambda: _ac_stream(_ac_small(), b"\xff" * 400), "more than the"),
    (lambda: _replace(_ac_small(), "stream", np.zeros((2, 2), np.uint8)), "1-d uint8"),
    (lambda: _set_meta(_ac_small(), **{"top-levels": [0.5, 0.4, 0.6, 0.9]}), "top-levels"),
    (lambda: _set_meta(_ac_small(), **{"top-levels": [0.5, 0.9]}), "top-levels"),
    (lambda: _set_meta(_ac_small(), **{"top-levels": [0.1, 0.5, 0.6, 0.9]}), "top-levels"),
    (lambda: _set_meta(_ac_small(), **{"runner-share": 1.5}), "runner-share"),
    (lambda: _set_meta(_ac_small(), **{"runner-share": True}), "runner-share"),
    (lambda: _set_meta(_ac_small(), side="none"), "not the coding"),
    (lambda: _ac_rows(lambda rows: [[r[0], r[1], 0, r[0]] for r in rows]), "runner-up labels"),
    (lambda: _ac_rows(lambda rows: [[r[0], r[1], r[2], -1] for r in rows]), "not the coding"),
])
def test_every_hard4p2r1_ac_error_names_the_problem(make, match):
    with pytest.raises(PayloadError, match=match):
        decode_payload(make(), (40, 6))


def test_hard4p2r1_ac_refuses_too_few_classes_both_ways():
    with pytest.raises(ValueError, match="at least 6 classes"):
        encode_payload(InferencePayload(_probs(4, 5), 1, "probs"), Codec("hard4p2r1-ac"))
    with pytest.raises(PayloadError, match="at least 6 classes"):
        decode_payload(_ac_small(), (40, 5))


def test_a_flipped_bit_in_an_arithmetic_coded_stream_never_decodes_unnoticed():
    """Every single-bit change of the stream is refused, or decodes to other samples that
    code back to exactly the changed bytes (a valid payload a peer could have sent)."""
    content = _ac_small()
    data = bytes(parts(content)["stream"])
    refused = 0
    for i in range(8 * len(data)):
        changed = bytearray(data)
        changed[i // 8] ^= 1 << (i % 8)
        try:
            decode_payload(_ac_stream(_ac_small(), changed), (40, 6))
        except PayloadError:
            refused += 1
    assert refused >= 0.9 * 8 * len(data)


def test_hard4p2r1_ac_levels_stay_ascending_on_float64_ties():
    """Found by review: a cell's mean of equal float64 values rounded up past an empty
    neighbour's level, and the sender's own payload was refused."""
    c, m, x = 10, 300, 0.9
    scores = np.full((m + m // 3, c), (1 - x) / (c - 1))
    scores[:, 0] = x
    scores[m:] = np.eye(c)[1]
    content = encode_payload(InferencePayload(scores, 1, "probs"), Codec("hard4p2r1-ac"))
    assert np.all(np.diff(meta(content)["top-levels"]) >= 0)
    got = decode_payload(content, scores.shape).scores
    np.testing.assert_array_equal(got.argmax(1), scores.argmax(1))


@pytest.mark.parametrize("codec", ["hard4", "hard4p1", "hard4p2r1-ac"])
def test_the_weights_alone_refuse_parts_the_codec_does_not_write(codec):
    """Push-sum takes a refused payload's mass from its weights alone: that path, too, refuses
    a payload holding parts no such payload has (the hard4 family's rule before codecs
    moved to their own modules)."""
    from flower_gd.codecs import decode_sample_weights
    probs = _probs(40, 10, seed=2)
    content = encode_payload(InferencePayload(probs, 1, "probs", sample_weights=np.ones(40)),
                             Codec(codec))
    decode_sample_weights(content, probs.shape)
    junk = _replace(content, "extra", np.zeros(4, np.uint8))
    with pytest.raises(PayloadError, match="arrays no .* payload has"):
        decode_sample_weights(junk, probs.shape)


def test_an_ac_payload_refused_for_its_codebook_still_gives_up_its_mass():
    """The weights do not depend on the top levels: a payload refused only for them keeps
    push-sum's mass, as a hard4p1 payload does."""
    from flower_gd.codecs import decode_sample_weights
    w = np.random.default_rng(3).uniform(0.5, 4, 40)
    content = encode_payload(InferencePayload(_probs(40, 10, seed=4), 1, "probs",
                                              sample_weights=w), Codec("hard4p2r1-ac"))
    sent = decode_payload(content, (40, 10)).sample_weights
    bad = _set_meta(content, **{"top-levels": [0.9, 0.5, 0.6, 0.7]})  # (in place)
    with pytest.raises(PayloadError, match="top-levels"):
        decode_payload(bad, (40, 10))
    np.testing.assert_allclose(decode_sample_weights(bad, (40, 10)), sent)


def test_fifteen_weight_levels_over_eight_nats_are_hard4s():
    """hard4p2r1-ac's weight quantizer generalises hard4's (11 levels instead of 15)."""
    from flower_gd.payload_codecs.hard4p2r1_ac import level_weights, weight_levels
    rng = np.random.default_rng(8)
    for w in (np.exp(rng.uniform(-12, 3, 500)), np.zeros(4), np.array([0.0, 1e-40, 2.0])):
        level, top = weight_levels(w, 15, LOG_WEIGHT_SPAN)
        want, want_top = nibble_weights(w)
        np.testing.assert_array_equal(level, want)
        assert top == want_top
        np.testing.assert_array_equal(level_weights(level, top, 15, LOG_WEIGHT_SPAN),
                                      unnibble_weights(want, want_top))
