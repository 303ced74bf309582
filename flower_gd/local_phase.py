"""The local phase, computed once and shared by every method that starts from it.

`local`, `gossip`, `gossip-adaptive` and `dlad` all begin with the same work on each node: a
fresh model trained on the node's private data and (the adaptive methods) a discriminator of
private against common data. For one seed and partition that work is identical, so it is
stored content-addressed and reused: the key is a digest of everything the result depends
on, the arrays themselves (not the config keys that led to them), the model family, the
training settings, the seeds, the package versions and the project's source. A change to
any of them gives a new key, i.e. a miss; nothing is ever looked up by run name.

Entries live in `<cache root>/<key>/` (model state or confidences, plus the last epoch's
loss), written under a temporary name and renamed into place, so a crash leaves no half
entry and two processes computing the same entry both end with a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flower_gd.provenance import source_digest

CACHE_DIR = ".local-phase"  # hidden, beside the run directories of a sweep (its output dir)
MODEL_FILE, CONFIDENCE_FILE, LOSS_FILE = "model.pt", "confidence.npy", "loss.json"


def array_digest(*arrays: np.ndarray) -> str:
    """Digest of arrays' dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def key_of(parts: dict[str, Any]) -> str:
    """The content address of a local-phase result with these inputs."""
    versions = {"source": source_digest(), "torch": torch.__version__, "numpy": np.__version__}
    text = json.dumps({**parts, **versions}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class LocalPhaseCache:
    """Content-addressed local-phase results under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _entry(self, key: str) -> Path:
        return self.root / key

    def load_model(self, key: str, model: nn.Module) -> tuple[nn.Module, float] | None:
        """The trained model and its loss under `key`, loaded into `model`; None on a miss."""
        entry = self._entry(key)
        if not (entry / MODEL_FILE).is_file():
            return None
        model.load_state_dict(torch.load(entry / MODEL_FILE, weights_only=True))
        return model, float(json.loads((entry / LOSS_FILE).read_text()))

    def load_confidence(self, key: str) -> tuple[np.ndarray, float] | None:
        entry = self._entry(key)
        if not (entry / CONFIDENCE_FILE).is_file():
            return None
        return np.load(entry / CONFIDENCE_FILE), float(json.loads((entry / LOSS_FILE).read_text()))

    def save(self, key: str, loss: float, model: nn.Module | None = None,
             confidence: np.ndarray | None = None) -> None:
        """Store one result; an entry that already exists is left as it is."""
        entry = self._entry(key)
        if entry.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{key}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if model is not None:
            torch.save(model.state_dict(), tmp / MODEL_FILE)
        if confidence is not None:
            with (tmp / CONFIDENCE_FILE).open("wb") as fh:
                np.save(fh, confidence)
        (tmp / LOSS_FILE).write_text(json.dumps(loss))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process stored the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
