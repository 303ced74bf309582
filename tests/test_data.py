"""Loaders read small files written here in the real MNIST-IDX, CIFAR-10 and CINIC-10 formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from flower_gd.data import DatasetNotFound, load_dataset, load_digits, read_idx


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    # IDX: two zero bytes, type code 0x08 (uint8), ndim, then big-endian int32 dims.
    header = (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
              + struct.pack(f">{array.ndim}i", *array.shape))
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def _write_mnist(folder, n_train=30, n_test=10, compress=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images = {"train": rng.integers(0, 256, (n_train, 28, 28)),
              "t10k": rng.integers(0, 256, (n_test, 28, 28))}
    labels = {"train": np.arange(n_train) % 10, "t10k": np.arange(n_test) % 10}
    for split in ("train", "t10k"):
        _write_idx(folder / f"{split}-images-idx3-ubyte", images[split], compress)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", labels[split], compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files_load_from_data_dir(tmp_path, compress):
    images, labels = _write_mnist(tmp_path, compress=compress)
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.y_train, labels["train"])
    # normalisation is (x/255 - mean)/std: undo it and compare with the written pixels
    restored = (ds.x_train[:, 0] * 0.3081 + 0.1307) * 255
    np.testing.assert_allclose(restored, images["train"], atol=1e-3)


def test_fashion_mnist_reads_torchvision_layout(tmp_path):
    _write_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    ds = load_dataset("fashion-mnist", str(tmp_path))
    assert len(ds.y_train) == 30 and len(ds.y_test) == 10


def test_truncated_idx_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    _write_idx(path, np.zeros((5, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_missing_mnist_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFound,
                       match=r"train-images-idx3-ubyte\[.gz\] not found.*data-dir"):
        load_dataset("mnist", str(tmp_path))


def _write_cifar(folder, per_batch=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 "labels": list(range(per_batch)), "batch_label": name,
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        with (folder / name).open("wb") as fh:
            pickle.dump(entry, fh)


def test_cifar10_pickled_batches_load(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.tolist() == [0, 1, 2, 3] * 5


def test_cifar10_missing_batches_fail_clearly(tmp_path):
    with pytest.raises(DatasetNotFound, match="cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path))


def test_cinic10_image_folders_load(tmp_path):
    classes = ["airplane", "automobile", "bird"]
    for split, n in (("train", 2), ("valid", 1), ("test", 1)):
        for c in classes:
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")
    ds = load_dataset("cinic10", str(tmp_path))
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert sorted(ds.y_train.tolist()) == [0, 0, 1, 1, 2, 2]


def test_cinic10_missing_folder_fails_clearly(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"\['train', 'test'\] not found"):
        load_dataset("cinic10", str(tmp_path))


def test_digits_is_embedded_and_split_without_overlap():
    ds = load_digits()
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.y_train) + len(ds.y_test) == 1797
