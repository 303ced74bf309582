"""Table I class sets, even splits, no duplicates, and impossible requests."""

import numpy as np
import pytest

from flower_gd.partitions import (
    TABLE_I,
    PartitionError,
    class_sets,
    partition_private,
    split_private_common,
)

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 100 per class


def _private():
    return split_private_common(LABELS, 0.2, seed=0).private


def test_split_is_disjoint_complete_and_per_class():
    split = split_private_common(LABELS, 0.2, seed=3)
    assert len(np.intersect1d(split.private, split.common)) == 0
    assert len(split.private) + len(split.common) == len(LABELS)
    assert np.bincount(LABELS[split.private]).tolist() == [20] * 10


def test_split_is_fixed_by_seed_and_common_limit_subsamples():
    a = split_private_common(LABELS, 0.2, seed=5)
    b = split_private_common(LABELS, 0.2, seed=5)
    np.testing.assert_array_equal(a.common, b.common)
    limited = split_private_common(LABELS, 0.2, seed=5, common_limit=100)
    assert len(limited.common) == 100
    assert set(limited.common) <= set(a.common)


def test_validation_is_held_out_of_private_and_common_and_fixed_by_seed():
    split = split_private_common(LABELS, 0.2, seed=4, val_fraction=0.1)
    assert np.bincount(LABELS[split.val]).tolist() == [10] * 10  # per class
    assert len(np.intersect1d(split.val, split.private)) == 0
    assert len(np.intersect1d(split.val, split.common)) == 0
    assert len(split.val) + len(split.private) + len(split.common) == len(LABELS)
    assert np.bincount(LABELS[split.private]).tolist() == [18] * 10  # 20% of the rest
    again = split_private_common(LABELS, 0.2, seed=4, val_fraction=0.1)
    np.testing.assert_array_equal(split.val, again.val)
    other = split_private_common(LABELS, 0.2, seed=5, val_fraction=0.1)
    assert not np.array_equal(split.val, other.val)
    limited = split_private_common(LABELS, 0.2, seed=4, val_fraction=0.1, val_limit=30)
    assert len(limited.val) == 30 and set(limited.val) <= set(split.val)
    np.testing.assert_array_equal(limited.private, split.private)  # the limit moves nothing else


def test_no_validation_leaves_the_split_as_it_was():
    """val-fraction = 0 gives the private and common sets of a split without validation."""
    plain = split_private_common(LABELS, 0.2, seed=6)
    none = split_private_common(LABELS, 0.2, seed=6, val_fraction=0.0)
    np.testing.assert_array_equal(plain.private, none.private)
    np.testing.assert_array_equal(plain.common, none.common)
    assert len(none.val) == 0


@pytest.mark.parametrize("scheme, expected", [
    ("niid1", [{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}]),
    ("niid2", [{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 6}, {0, 1, 2, 3, 4, 7}, {0, 1, 2, 3, 4, 8},
               {0, 1, 2, 3, 4, 9}]),
    ("niid3", [{0, 1, 2, 3}, {0, 4, 5, 6}, {1, 4, 7, 8}, {2, 5, 7, 9}, {3, 6, 8, 9}]),
])
def test_table_i_class_sets_repeat_every_five_nodes(scheme, expected):
    parts = partition_private(LABELS, _private(), scheme, num_nodes=10, seed=0)
    got = [set(np.unique(LABELS[p]).tolist()) for p in parts]
    assert got == expected + expected
    assert [set(s) for s in TABLE_I[scheme]] == expected


def test_niid4_gives_node_i_class_i_mod_10_and_iid_gives_all():
    parts = partition_private(LABELS, _private(), "niid4", num_nodes=10, seed=0)
    assert [np.unique(LABELS[p]).tolist() for p in parts] == [[i] for i in range(10)]
    parts = partition_private(LABELS, _private(), "iid", num_nodes=10, seed=0)
    assert all(np.unique(LABELS[p]).tolist() == list(range(10)) for p in parts)


@pytest.mark.parametrize("scheme", ["iid", "niid1", "niid2", "niid3", "niid4", "dirichlet"])
@pytest.mark.parametrize("num_nodes", [2, 7, 10, 15])
def test_no_sample_twice_and_only_private_samples(scheme, num_nodes):
    private = _private()
    parts = partition_private(LABELS, private, scheme, num_nodes=num_nodes, seed=1)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined))
    assert set(joined) <= set(private)


def test_a_class_is_split_evenly_among_its_owners():
    # niid2 with 10 nodes: class 0 has 10 owners, class 5 has 2 (nodes 0 and 5)
    private = _private()
    parts = partition_private(LABELS, private, "niid2", num_nodes=10, seed=0)
    counts0 = [int((LABELS[p] == 0).sum()) for p in parts]
    counts5 = [int((LABELS[p] == 5).sum()) for p in parts]
    assert counts0 == [2] * 10
    assert counts5 == [10, 0, 0, 0, 0, 10, 0, 0, 0, 0]


def test_impossible_requests_fail_clearly():
    with pytest.raises(PartitionError, match=">= 2 nodes"):
        class_sets("iid", 1, 10)
    with pytest.raises(PartitionError, match="needs 10 classes"):
        class_sets("niid4", 10, 5)
    with pytest.raises(PartitionError, match="defined for 10 classes"):
        class_sets("niid1", 10, 7)
    tiny = np.repeat(np.arange(10), 5)
    with pytest.raises(PartitionError, match="private samples for"):
        partition_private(tiny, np.arange(50), "iid", num_nodes=8, seed=0)


def test_unowned_classes_warn():
    with pytest.warns(UserWarning, match=r"leaves classes \[8, 9\]"):
        class_sets("niid1", 4, 10)


def test_dirichlet_is_skewed_for_small_alpha():
    parts = partition_private(LABELS, _private(), "dirichlet", num_nodes=5, seed=0, alpha=0.1)
    classes_per_node = [len(np.unique(LABELS[p])) for p in parts]
    assert min(classes_per_node) < 10
