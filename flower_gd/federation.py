"""One node's view of the federation: its private data, the common data and the test set."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from flower_gd.config import RunConfig
from flower_gd.data import Dataset, load_dataset
from flower_gd.local_phase import array_digest
from flower_gd.partitions import Split, partition_private, split_private_common


@dataclass(frozen=True)
class FederatedData:
    """A dataset cut into private partitions, common data and a test set, fixed by seed."""

    dataset: Dataset
    split: Split
    parts: list[np.ndarray]
    test_idx: np.ndarray

    def private(self, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Private labelled data PD_i of one node: images (n, C, H, W), labels (n,)."""
        idx = self.parts[partition_id]
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    @property
    def common_x(self) -> np.ndarray:
        """Common unlabelled data X_c (n_common, C, H, W), the same on every node."""
        return self.dataset.x_train[self.split.common]

    @cached_property
    def common_digest(self) -> str:
        """Digest of X_c (content addresses of the local phase): computed once per process,
        not once per node and message."""
        return array_digest(self.common_x)

    @property
    def common_y(self) -> np.ndarray:
        """True labels of X_c: only for the ground-truth diagnostic and label-quality reports."""
        return self.dataset.y_train[self.split.common]

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray]:
        """Validation images and labels: held out of the training set, for every choice."""
        idx = self.split.val
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.x_test[self.test_idx], self.dataset.y_test[self.test_idx]


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str, download: bool) -> Dataset:
    return load_dataset(name, data_dir, download)


@lru_cache(maxsize=4)
def _federated(dataset: str, data_dir: str, download: bool, seed: int, private_fraction: float,
               common_limit: int, test_limit: int, scheme: str, alpha: float,
               num_nodes: int, val_fraction: float, val_limit: int) -> FederatedData:
    ds = _dataset(dataset, data_dir, download)
    split = split_private_common(ds.y_train, private_fraction, seed, common_limit,
                                 val_fraction, val_limit)
    parts = partition_private(ds.y_train, split.private, scheme, num_nodes, seed,
                              ds.num_classes, alpha)
    test_idx = np.arange(len(ds.y_test))
    if test_limit and test_limit < len(test_idx):
        test_idx = np.sort(np.random.default_rng(seed + 2).permutation(test_idx)[:test_limit])
    return FederatedData(ds, split, parts, test_idx)


def federated_data(cfg: RunConfig, num_nodes: int) -> FederatedData:
    """The federation's data, cached per process (a simulation worker serves many nodes).

    Only the keys that shape the data enter the cache key, so methods that differ in
    anything else share one copy.
    """
    return _federated(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed, cfg.private_fraction,
                      cfg.common_limit, cfg.test_limit, cfg.partition_scheme,
                      cfg.dirichlet_alpha, num_nodes, cfg.val_fraction, cfg.val_limit)
