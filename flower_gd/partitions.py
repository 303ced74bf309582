"""Private/common split and the paper's Table I partitions (plus Dirichlet label skew)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


class PartitionError(ValueError):
    """A partition request that cannot be met; the message says why and what would work."""


# Table I of the paper: the class sets of nodes U_{5n+1} .. U_{5n+5}.
TABLE_I: dict[str, list[frozenset[int]]] = {
    "niid1": [frozenset(s) for s in ({0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9})],
    "niid2": [frozenset({0, 1, 2, 3, 4, c}) for c in (5, 6, 7, 8, 9)],
    "niid3": [frozenset(s) for s in ({0, 1, 2, 3}, {0, 4, 5, 6}, {1, 4, 7, 8}, {2, 5, 7, 9},
                                     {3, 6, 8, 9})],
}
# What a purely local model can reach, as a share of the achievable (paper section IV).
EXPECTED_LOCAL_SHARE = {"iid": 1.0, "niid1": 0.2, "niid2": 0.6, "niid3": 0.4, "niid4": 0.1}


@dataclass(frozen=True)
class Split:
    """Indices into the training set: private (labelled, partitioned), common (unlabelled)
    and validation (labelled, never trained on: every choice of settings is made on it)."""

    private: np.ndarray
    common: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def split_private_common(labels: np.ndarray, private_fraction: float, seed: int,
                         common_limit: int = 0, val_fraction: float = 0.0,
                         val_limit: int = 0) -> Split:
    """Split the training set into validation, private and common data, per class, with no
    index in two of them.

    `val_fraction` of every class is held out for validation first (`val_limit` > 0
    subsamples it); of the rest, `private_fraction` of every class is private (paper: 20%)
    and the remainder is common data, whose labels are never used for training.
    `common_limit` > 0 subsamples the common data. With `val_fraction` = 0 the private and
    common sets are those of a split without validation.
    """
    rng = np.random.default_rng(seed)
    private, common, val = [], [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        v = int(round(val_fraction * len(idx)))
        val.append(idx[:v])
        idx = idx[v:]
        k = int(round(private_fraction * len(idx)))
        private.append(idx[:k])
        common.append(idx[k:])
    priv = rng.permutation(np.concatenate(private))
    comm = rng.permutation(np.concatenate(common))
    if common_limit and common_limit < len(comm):
        comm = comm[:common_limit]
    held = np.concatenate(val).astype(np.int64)
    if val_limit and val_limit < len(held):  # own stream: the other sets do not move
        held = np.random.default_rng(seed + 3).permutation(held)[:val_limit]
    return Split(private=np.sort(priv), common=np.sort(comm), val=np.sort(held))


def class_sets(scheme: str, num_nodes: int, num_classes: int) -> list[frozenset[int]]:
    """Classes owned by each node under a Table I scheme (iid, niid1 .. niid4).

    Raises
    ------
    PartitionError
        For fewer than 2 nodes, or a scheme that needs more classes than the dataset has.
    """
    if num_nodes < 2:
        raise PartitionError(f"{num_nodes} node(s): gossip and federated methods need >= 2 nodes")
    if scheme == "iid":
        return [frozenset(range(num_classes))] * num_nodes
    if scheme in TABLE_I:
        if num_classes != 10:
            raise PartitionError(f"{scheme} is defined for 10 classes (Table I); the dataset "
                                 f"has {num_classes}. Use iid, niid4 or dirichlet.")
        sets = [TABLE_I[scheme][i % 5] for i in range(num_nodes)]
    elif scheme == "niid4":
        if num_classes < 10:
            raise PartitionError(f"niid4 gives node i class i mod 10 and needs 10 classes; "
                                 f"the dataset has {num_classes}")
        sets = [frozenset({i % 10}) for i in range(num_nodes)]
    else:
        raise PartitionError(f"unknown partition scheme {scheme!r}")
    unowned = sorted(set(range(num_classes)) - set().union(*sets))
    if unowned:
        warnings.warn(f"{scheme} with {num_nodes} nodes leaves classes {unowned} with no "
                      "owner: no node has private data of them", stacklevel=2)
    return sets


def partition_private(labels: np.ndarray, private: np.ndarray, scheme: str, num_nodes: int,
                      seed: int, num_classes: int = 10, alpha: float = 0.5,
                      min_samples: int = 2) -> list[np.ndarray]:
    """Divide the private indices among nodes; returns one sorted index array per node.

    Table I schemes split each class evenly among the nodes that own it; `dirichlet` draws
    each class's shares over nodes from Dir(alpha) (the field's usual label-skew split).
    """
    rng = np.random.default_rng(seed + 1)
    if scheme == "dirichlet":
        return _dirichlet(labels, private, num_nodes, rng, num_classes, alpha, min_samples)
    sets = class_sets(scheme, num_nodes, num_classes)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
    for c in range(num_classes):
        owners = [n for n in range(num_nodes) if c in sets[n]]
        if not owners:
            continue
        idx = rng.permutation(private[labels[private] == c])
        if len(idx) < len(owners):
            raise PartitionError(
                f"class {c} has {len(idx)} private samples for {len(owners)} owners under "
                f"{scheme}: use fewer nodes, a larger private-fraction or a bigger dataset")
        for owner, chunk in zip(owners, np.array_split(idx, len(owners)), strict=True):
            parts[owner].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    for n, p in enumerate(out):
        if len(p) < min_samples:
            raise PartitionError(f"node {n} would get {len(p)} private samples under {scheme}; "
                                 "use fewer nodes or a larger private-fraction")
    return out


def _dirichlet(labels: np.ndarray, private: np.ndarray, num_nodes: int,
               rng: np.random.Generator, num_classes: int, alpha: float,
               min_samples: int, max_tries: int = 100) -> list[np.ndarray]:
    if num_nodes < 2:
        raise PartitionError(f"{num_nodes} node(s): need >= 2 nodes")
    if len(private) < num_nodes * min_samples:
        raise PartitionError(f"{len(private)} private samples cannot give {num_nodes} nodes "
                             f"{min_samples} each: use fewer nodes or more private data")
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
        for c in range(num_classes):
            idx = rng.permutation(private[labels[private] == c])
            shares = rng.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for n, chunk in enumerate(np.split(idx, cuts)):
                parts[n].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_samples:
            return out
    raise PartitionError(f"dirichlet(alpha={alpha}) left a node with < {min_samples} samples "
                         f"in {max_tries} draws: raise dirichlet-alpha or use fewer nodes")
