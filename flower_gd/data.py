"""Datasets (digits, MNIST, Fashion-MNIST, CIFAR-10, CINIC-10) as normalised numpy arrays."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_CLASSES = 10

# Debian's dataset-fashion-mnist package puts the four IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# Per-channel (mean, std) used to normalise inputs; the usual published statistics.
_STATS = {
    "digits": ((0.3,), (0.38,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cinic10": ((0.4789, 0.4723, 0.4305), (0.2421, 0.2383, 0.2587)),
}


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing; the message says where they were looked for and the fix."""


@dataclass(frozen=True)
class Dataset:
    """A labelled train/test pair; images are float32 (N, C, H, W), labels int64 (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.x_train.shape[1:]
        return int(channels), int(height), int(width)


def _normalise(name: str, images_uint8_or_float: np.ndarray, scale: float) -> np.ndarray:
    x = images_uint8_or_float.astype(np.float32) / scale
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in _STATS[name])
    return np.ascontiguousarray((x - mean) / std)


# ----------------------------------------------------------------------------- digits
def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), split into train/test by a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.images.reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    x = _normalise("digits", x, 16.0)
    return Dataset("digits", x[train], y[train], x[test], y[test])


# ----------------------------------------------------------------------------- IDX
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not, into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                             0x0E: ">f8"}
    if raw[2] not in dtype:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=dtype[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} values "
                         "(truncated download?)")
    return data.reshape(tuple(int(d) for d in dims))


def _find_idx(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def load_idx_dataset(name: str, data_dir: str, download: bool = False) -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files.

    Looks in `data_dir`, `data_dir/<MNIST|FashionMNIST>/raw` (torchvision's layout) and, for
    Fashion-MNIST, Debian's /usr/share/datasets/fashion-mnist. With `download` it asks
    torchvision to fetch the files into `data_dir` first.
    """
    root = Path(data_dir).expanduser() if data_dir else Path("data")
    dirs = [root, root / _TORCHVISION_DIR[name] / "raw"]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    if download and _find_idx(IDX_FILES["train"][0], dirs) is None:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        for train in (True, False):
            cls(str(root), train=train, download=True)
    found = {}
    for stems in IDX_FILES.values():
        for stem in stems:
            path = _find_idx(stem, dirs)
            if path is None:
                hint = ("`apt-get install dataset-fashion-mnist` (files land in "
                        f"{DEBIAN_FASHION_MNIST}), or " if name == "fashion-mnist" else "")
                raise DatasetNotFound(
                    f"{name}: {stem}[.gz] not found in {[str(d) for d in dirs]}. Fix: {hint}"
                    "put the four IDX files in a folder and set data-dir to it, or set "
                    "download=true on a machine with internet access."
                )
            found[stem] = path
    arrays = {stem: read_idx(p) for stem, p in found.items()}
    (xtr, ytr), (xte, yte) = ((arrays[img], arrays[lab]) for img, lab in IDX_FILES.values())
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if len(x) != len(y):
            raise ValueError(f"{name} {split}: {len(x)} images but {len(y)} labels")
    to_x = lambda a: _normalise(name, a[:, None, :, :], 255.0)  # noqa: E731
    return Dataset(name, to_x(xtr), ytr.astype(np.int64), to_x(xte), yte.astype(np.int64))


# ----------------------------------------------------------------------------- CIFAR-10
def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as fh:
        entry = pickle.load(fh, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def load_cifar10(data_dir: str, download: bool = False) -> Dataset:
    """CIFAR-10 from torchvision's `cifar-10-batches-py` pickled batches.

    The batches are read directly (so test fixtures in the same format load too); with
    `download` torchvision fetches and checks the archive first.
    """
    root = Path(data_dir).expanduser() if data_dir else Path("data")
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir() and (root / "data_batch_1").is_file():
        folder = root
    if download and not (folder / "data_batch_1").is_file():
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetNotFound(
            f"cifar10: {missing} not found in {folder}. Fix: extract cifar-10-python.tar.gz "
            "so that data-dir/cifar-10-batches-py/ holds data_batch_1..5 and test_batch, or "
            "set download=true on a machine with internet access."
        )
    parts = [_read_cifar_batch(folder / n) for n in names]
    xtr = np.concatenate([p[0] for p in parts[:5]])
    ytr = np.concatenate([p[1] for p in parts[:5]])
    xte, yte = parts[5]
    return Dataset("cifar10", _normalise("cifar10", xtr, 255.0), ytr,
                   _normalise("cifar10", xte, 255.0), yte)


# ----------------------------------------------------------------------------- CINIC-10
def _read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder))
    images = np.empty((len(ds), 3, 32, 32), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        img = ds.loader(path).convert("RGB")
        if img.size != (32, 32):
            img = img.resize((32, 32))
        images[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return images, np.asarray(ds.targets, dtype=np.int64)


def load_cinic10(data_dir: str, download: bool = False) -> Dataset:
    """CINIC-10 from its standard `train/ valid/ test/` image-folder layout (class sub-folders).

    The train split is the training set and test the test set; valid is not used.
    """
    root = Path(data_dir).expanduser() if data_dir else Path("data") / "cinic10"
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DatasetNotFound(
            f"cinic10: folder(s) {missing} not found under {root}. Fix: extract "
            "CINIC-10.tar.gz (it has no torchvision downloader) and set data-dir to the "
            "folder holding train/, valid/ and test/."
            + (" download=true cannot fetch CINIC-10." if download else "")
        )
    xtr, ytr = _read_image_folder(root / "train")
    xte, yte = _read_image_folder(root / "test")
    return Dataset("cinic10", _normalise("cinic10", xtr, 255.0), ytr,
                   _normalise("cinic10", xte, 255.0), yte)


def load_dataset(name: str, data_dir: str = "", download: bool = False) -> Dataset:
    """Load a dataset by its run-config name."""
    if name == "digits":
        return load_digits()
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(name, data_dir, download)
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    if name == "cinic10":
        return load_cinic10(data_dir, download)
    raise ValueError(f"unknown dataset {name!r}")
