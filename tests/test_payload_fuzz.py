"""A seeded payload fuzzer: whatever a peer sends, a receiver refuses it with a named reason
and keeps its state, or decodes finite, normalised probabilities. Nothing else escapes."""

import json
import shutil
import zlib
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from payload_edit import blob, header_and_body, parts, rewrite, write_blob, write_header

from flower_gd.codecs import (
    PAYLOAD_KEY,
    Codec,
    Expect,
    InferencePayload,
    PayloadError,
    decode_payload,
    decode_sample_weights,
    encode_payload,
    payload_key,
)
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.node import Node
from flower_gd.payload_codecs import CODECS
from strategies import gossip
from strategies import gossip_adaptive as ga

N, C = 8, 5  # common samples, classes
# classes a codec is fuzzed with: hard4p2r1-ac needs at least 6
CLASSES = {"hard4p2r1-ac": 6}
RECEIVERS = {  # what each receiver needs of a payload, as its step asks decode_payload
    "gossip": Expect(kind="probs"),
    "gossip (logits)": Expect(kind="logits"),
    "gossip-adaptive": ga.EXPECT,
    "dlad": Expect(kind="probs", confidence=True),
}
CASES_PER_CODEC = 500


def _valid(rng, codec, c=C):
    logits = rng.normal(0, 3, size=(N, c))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    confidence, weights = rng.uniform(0, 1, N), rng.uniform(0.01, 9, N)
    if codec in ("hard4", "hard4p1", "hard4p2r1-ac"):  # one 4-bit side value: w or d
        confidence, weights = (confidence, None) if rng.integers(2) else (None, weights)
    payload = InferencePayload(probs, int(rng.integers(1, 9)), "probs",
                               confidence=confidence, sample_weights=weights)
    return encode_payload(payload, Codec(codec, topk=int(rng.integers(1, c + 1)),
                                         compress=bool(rng.integers(2))))


def _arrays(content):
    return parts(content)


def _set_arrays(content, arrays):
    rewrite(content, arrays=arrays)


def _set_meta(content, **changes):
    rewrite(content, **changes)


ODD_DTYPES = ["f4,(", "i4,)", "10000000000u1", "(2147483647,2147483647)f8", "V4", "O", "S4",
              "b1", "<M8", "<f16", ">f4", "<f8", "<i4", "a", "", "|u1", "<u2", "<f2", "<f4"]
ODD_VALUES = [[], {}, [1, [2]], {"a": 1}, None, True, 1.5, -1, 2**70, "x" * 50]
# hard4p1's codebook: a pair of probabilities at or above its floor, or refused
ODD_TOP_LEVELS = [[None], [0.5], [0.5, 0.9, 0.95], ["a", 1.0], [True, 1.0], [0.01, 1.0],
                  [0.5, 1.5], [0.9, 0.5], [0, 1], [-0.5, 0.9], [1e-320, 1.0],
                  [0.9, 0.5, 0.6, 0.7], [0.3, 0.5, 0.7, 1.5], [0.3, 0.5, 0.7, "1"]]


def _mutate_header(rng, content):
    """A header a peer wrote by hand: odd part types and shapes, odd metadata values, deep
    nesting."""
    text, body = header_and_body(content)
    header = json.loads(text)
    what = int(rng.integers(4))
    if what == 0 and header["parts"]:
        header["parts"][int(rng.integers(len(header["parts"])))][1] = str(rng.choice(ODD_DTYPES))
    elif what == 1 and header["parts"]:
        dims = [0, 1, 2**31, 2**40, -1, True, 1.0, "3", None]
        header["parts"][int(rng.integers(len(header["parts"])))][2] = [
            dims[int(rng.integers(len(dims)))] for _ in range(int(rng.integers(4)))]
    elif what == 2:
        key = str(rng.choice(["codec", "kind", "counter", "topk", "zlib", "side", "log-top",
                              "top-levels", "runner-share"]))
        odd = [*ODD_VALUES, *ODD_TOP_LEVELS] if key == "top-levels" else ODD_VALUES
        header["meta"][key] = odd[int(rng.integers(len(odd)))]
    else:
        depth = int(rng.integers(10, 2000))
        header["meta"]["deep"] = json.loads("[" * depth + "]" * depth) if depth < 900 else 0
        if depth >= 900:  # deeper than json itself nests: write the text by hand
            text = json.dumps(header).replace('"deep": 0', '"deep": ' + "[" * depth + "]" * depth)
            write_header(content, text, body)
            return
    write_header(content, json.dumps(header), body)


def _mutate_bytes(rng, content):
    """A malformation of the payload's byte string itself (its layout, not its parts)."""
    if rng.integers(2):
        _mutate_header(rng, content)
        return
    data = bytearray(blob(content))
    what = int(rng.integers(4))
    if what == 0:  # bit flips anywhere: header, lengths or parts
        for i in rng.integers(len(data), size=int(rng.integers(1, 4))):
            data[i] ^= 1 << int(rng.integers(8))
    elif what == 1:
        del data[int(rng.integers(len(data))):]
    elif what == 2:
        data += rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:
        value = bytes(data) if rng.random() < 0.5 else bytes(data).decode("latin-1")
        write_blob(content, value, name=str(rng.choice(["payload", "scores"])))
        return
    write_blob(content, bytes(data))


def _mutate(rng, content, c=C):
    """One malformation of the kind a faulty or hostile peer could send."""
    try:
        arrays = _arrays(content)
    except PayloadError:  # an earlier mutation broke the layout: garbage enough
        return
    if not arrays:  # an earlier mutation dropped the last array: garbage enough
        return
    name = str(rng.choice(sorted(arrays)))
    arr = arrays[name]
    what = int(rng.integers(28))
    if what >= 24:
        _mutate_bytes(rng, content)
        return
    if what == 0:
        _set_meta(content, codec=str(rng.choice([*CODECS, "bf16", ""])))
    elif what == 1:
        _set_meta(content, kind=str(rng.choice(["logits", "probs", "labels", ""])))
    elif what == 2:
        _set_meta(content, counter=[0, -1, 10**7, 2**40, True][int(rng.integers(5))])
    elif what == 3:
        _set_meta(content, counter=None)
    elif what == 4:
        _set_meta(content, topk=[0, -1, c + 1, 255, True][int(rng.integers(5))])
    elif what == 5:
        _set_meta(content, zlib=[name])  # claims compression the data does not have
    elif what == 6:
        _set_meta(content, zlib=None)  # hides the compression it has
    elif what == 7:
        del arrays[name]
    elif what == 8:
        arrays["extra"] = np.zeros(N, np.float32)
    elif what == 9:
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[name] = arr.astype(rng.choice([np.float64, np.int32, np.uint16,
                                                  np.float16]))
    elif what == 10:
        arrays[name] = arr.reshape(-1)[: max(arr.size - int(rng.integers(1, 4)), 0)]
    elif what == 11:
        arrays[name] = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:3]])
    elif what in (12, 13, 14) and arr.dtype.kind == "f":
        bad = arr.copy().reshape(-1)
        pick = rng.integers(bad.size, size=int(rng.integers(1, 4)))
        bad[pick] = [np.nan, np.inf, -np.inf][what - 12]
        arrays[name] = bad.reshape(arr.shape)
    elif what == 15:
        arrays[name] = np.zeros_like(arr)  # all-zero rows, labels, indices, values
    elif what == 16:
        arrays[name] = (arr * -1) if arr.dtype.kind == "f" else arr[::-1].copy()
    elif what == 17 and arr.dtype.kind == "f":
        arrays[name] = arr * rng.choice([0.5, 2.0, 1e6, 1e40 if arr.dtype == np.float64
                                         else 1e30])
    elif what == 18 and arr.dtype.kind == "u":
        arrays[name] = np.full_like(arr, np.iinfo(arr.dtype).max)
    elif what == 19:  # truncated zlib stream
        raw = zlib.compress(arr.tobytes())
        arrays[name] = np.frombuffer(raw[: len(raw) // 2], np.uint8)
        _set_meta(content, zlib=[name])
    elif what == 20:  # a zip bomb: inflates far beyond the expected size
        arrays[name] = np.frombuffer(zlib.compress(bytes(10**6)), np.uint8)
        _set_meta(content, zlib=[name])
    elif what == 21:  # random bytes that claim to be zlib
        arrays[name] = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8)
        _set_meta(content, zlib=[name])
    elif what == 22 and name == "topk-index":
        bad = arr.copy()
        if bad.ndim == 2 and bad.shape[1] > 1:  # (zlib-packed arrays are flat bytes)
            bad[:, 1] = bad[:, 0]  # duplicate indices in a row
        arrays[name] = bad
    elif what == 23:
        arrays[name] = rng.integers(0, 256, size=arr.shape).astype(arr.dtype)
    _set_arrays(content, arrays)


def _check(result, expect, c=C):
    """A payload that decodes must be safe to mix."""
    assert result.scores.shape == (N, c) and result.scores.dtype == np.float32
    assert np.isfinite(result.scores).all()
    if result.kind == "probs":
        assert (result.scores >= 0).all()
        np.testing.assert_allclose(result.scores.sum(1), 1.0, atol=1e-3)
    if expect.kind is not None:
        assert result.kind == expect.kind
    if expect.confidence:
        assert result.confidence is not None
    if expect.sample_weights:
        assert result.sample_weights is not None
    if result.confidence is not None:
        assert np.isfinite(result.confidence).all()
        assert ((result.confidence >= 0) & (result.confidence <= 1)).all()
    if result.sample_weights is not None:
        assert np.isfinite(result.sample_weights).all()
        assert ((result.sample_weights >= 0) & (result.sample_weights <= 1e30)).all()


@pytest.mark.parametrize("codec", CODECS)
def test_no_malformed_payload_escapes_decode(codec):
    rng = np.random.default_rng(list(CODECS).index(codec))
    refused, accepted, reasons = 0, 0, set()
    for _ in range(CASES_PER_CODEC):
        c = CLASSES.get(codec, C)
        content = _valid(rng, codec, c)
        for _ in range(int(rng.integers(1, 4))):
            _mutate(rng, content, c)
        for expect in RECEIVERS.values():
            try:
                result = decode_payload(content, (N, c), expect=expect)
            except PayloadError as err:  # refused, and it says why
                assert str(err)
                reasons.add(str(err).split(":")[0][:40])
                refused += 1
            else:
                _check(result, expect, c)
                accepted += 1
    assert refused + accepted == CASES_PER_CODEC * len(RECEIVERS)
    assert refused > accepted  # the fuzzer mostly makes garbage; some survive as valid data
    assert len(reasons) >= 8  # and it reaches many different checks


def test_the_holes_found_by_reading_the_code_are_closed():
    # a top-k payload keeping every class with all values 0 used to decode to NaN
    content = encode_payload(InferencePayload(np.full((N, C), 1 / C, np.float32), 1, "probs"),
                             Codec("topk", topk=C, compress=False))
    _set_arrays(content, {**_arrays(content),
                          "topk-value": np.zeros((N, C), np.uint8)})
    with pytest.raises(PayloadError, match="carry no probability"):
        decode_payload(content, (N, C))
    # float32 values claimed to be logits used to skip every probability check
    logits = encode_payload(InferencePayload(np.full((N, C), -128.0, np.float32), 1, "logits",
                                             sample_weights=np.ones(N)), Codec(compress=False))
    with pytest.raises(PayloadError, match="carries logits, this receiver mixes probs"):
        decode_payload(logits, (N, C), expect=ga.EXPECT)
    # a DLAD upload without its confidences
    upload = encode_payload(InferencePayload(np.full((N, C), 1 / C, np.float32), 1, "probs"))
    with pytest.raises(PayloadError, match="lacks the confidence this receiver needs"):
        decode_payload(upload, (N, C), expect=RECEIVERS["dlad"])


def test_top1_never_hands_the_argmax_to_a_class_it_dropped():
    # top probability just above 1/C: flooring it to 1/255 steps used to let the spread
    # remainder outscore it
    probs = np.array([[0.2002, 0.19995, 0.19995, 0.19995, 0.19995]], np.float32)
    content = encode_payload(InferencePayload(probs, 1, "probs"), Codec("topk", topk=1))
    got = decode_payload(content, (1, C)).scores
    assert got.argmax() == 0


def _tiny_node(tmp_path, pid, method):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {
        "method": method, "num-nodes": 3, "local-epochs": 1, "disc-epochs": 1,
        "common-limit": 40, "test-limit": 20}))
    return Node(cfg, pid, 3, str(tmp_path))


def _files(node, server_round):
    snap = node.store.snapshot(server_round)
    return {p.name: p.read_bytes() for p in snap.root.iterdir() if p.name != "meta.json"}


@pytest.mark.parametrize("method", ["gossip", "gossip-adaptive"])
def test_a_refused_payload_never_changes_a_node(tmp_path, method):
    module = gossip if method == "gossip" else ga
    a, b = _tiny_node(tmp_path, 0, method), _tiny_node(tmp_path, 1, method)
    module.local_phase(a)
    module.local_phase(b)
    shape = a.store.snapshot().array(gossip.LIST if method == "gossip" else ga.BELIEF).shape
    rng = np.random.default_rng(7)
    request = RecordDict({"config": ConfigRecord({"pullers": 1})})
    before = _files(a, 0)
    refused = 0
    for _ in range(60):
        content = module.share(b, request)
        for _ in range(int(rng.integers(1, 3))):
            _mutate(rng, content)
        relayed = RecordDict()
        relayed[payload_key(0)] = content[PAYLOAD_KEY]
        relayed["config"] = ConfigRecord({})
        try:
            decode_payload(relayed, shape, expect=RECEIVERS[method])
        except PayloadError:
            refused += 1
            node = replace(a, server_round=1)
            metrics = module.gossip_step(node, relayed)
            assert metrics["payload-rejected"] == 1 and metrics["peers"] == 0
            if method == "gossip":  # nothing was written
                assert a.store.rounds() == [0]
            else:  # gossip-adaptive keeps belief and model; its weights take the refused
                # payload's mass if that alone was valid (no receipts of its own here)
                after = _files(a, 1)
                assert {k: v for k, v in after.items() if k != "weights.npy"} == {
                    k: v for k, v in before.items() if k != "weights.npy"}
                own = a.store.snapshot(0).array(ga.SAMPLE_WEIGHTS)
                try:
                    taken = decode_sample_weights(relayed, shape)
                except PayloadError:
                    taken = np.zeros_like(own)
                np.testing.assert_allclose(a.store.snapshot(1).array(ga.SAMPLE_WEIGHTS),
                                           own + taken, rtol=1e-12)
                shutil.rmtree(a.store.snapshot(1).root)  # the next case starts from round 0
    assert refused >= 30

