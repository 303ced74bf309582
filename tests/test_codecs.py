"""Payload round trip and every decode-validation error."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from flower_gd.codecs import (PAYLOAD_KEY, PAYLOAD_META_KEY, InferencePayload, PayloadError,
                              decode_payload, encode_payload)

PROBS = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], dtype=np.float32)


def _content(scores=PROBS, counter=2, kind="probs", codec="float32"):
    content = encode_payload(InferencePayload(np.asarray(scores, dtype=np.float32), 1, kind))
    content[PAYLOAD_META_KEY] = ConfigRecord({"counter": counter, "kind": kind, "codec": codec})
    return content


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
    content = _content()
    content[PAYLOAD_KEY] = ArrayRecord({"scores": Array(PROBS.astype(np.float64))})
    with pytest.raises(PayloadError, match="dtype float64"):
        decode_payload(content, (2, 3))
