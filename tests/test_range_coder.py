"""The adaptive arithmetic coder of the codec screen: lossless, and near the entropy."""

import numpy as np
import pytest

from flower_gd.payload_codecs.range_coder import Model, decode_fields, encode_fields


def test_fields_in_contexts_with_absent_ones_round_trip():
    rng = np.random.default_rng(0)
    n = 3000
    label = rng.integers(0, 10, n)
    level = (label + rng.integers(0, 3, n)) % 16
    top = rng.integers(0, 4, n)
    runner = np.where(top == 0, (label + 1) % 10, -1)
    rows = np.stack([label, level, top, runner], axis=1).tolist()
    sizes, contexts = [10, 16, 4, 10], [(), (0,), (0, 1), (0,)]
    data = encode_fields(rows, sizes, contexts)
    back = decode_fields(data, n, sizes, contexts, [None, None, None, lambda r: r[2] == 0])
    assert back == rows


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_a_skewed_stream_costs_its_entropy_within_two_percent_and_a_few_bytes(p):
    rng = np.random.default_rng(1)
    n = 20000
    bits = (rng.random(n) > p).astype(int)
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) * n / 8
    data = encode_fields([[b] for b in bits], [2], [()])
    assert len(data) <= 1.02 * entropy + 8
    assert decode_fields(data, n, [2], [()]) == [[b] for b in bits]


def test_a_context_that_predicts_the_field_makes_it_nearly_free():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 10, 5000)
    rows = np.stack([label, label], axis=1).tolist()  # the second field copies the first
    alone = len(encode_fields([[x] for x in label], [10], [()]))
    together = len(encode_fields(rows, [10, 10], [(), (0,)]))
    assert together < 1.1 * alone  # log2(10) bits a row, not twice that


def test_symbols_outside_the_alphabet_are_refused():
    with pytest.raises(ValueError, match="outside the alphabet"):
        encode_fields([[10]], [10], [()])
    with pytest.raises(ValueError, match="outside the alphabet"):
        encode_fields([[-2]], [10], [()])  # only -1 means absent
    with pytest.raises(ValueError, match="a row of 1 fields, not 2"):
        encode_fields([[1]], [10, 10], [(), ()])
    with pytest.raises(ValueError, match="not coded before it"):
        encode_fields([[1, 1]], [10, 10], [(1,), ()])
    with pytest.raises(ValueError, match="at least one symbol"):
        Model(0)
