"""A node's persistent state on disk: model weights, inference list, counter.

In simulation Flower pickles the whole Context for every message, so weights and lists live
here, one directory per run and node, and `context.state` stays empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written state."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class NodeStore:
    """State of one node under `<run-dir>/nodes/node-<partition-id>/`."""

    def __init__(self, run_dir: str | Path, partition_id: int) -> None:
        self.root = Path(run_dir) / "nodes" / f"node-{partition_id}"
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def model_path(self) -> Path:
        return self.root / "model.pt"

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def save_model(self, model: nn.Module) -> None:
        _atomic_write(self.model_path, lambda p: torch.save(model.state_dict(), p))

    def load_model(self, model: nn.Module) -> nn.Module:
        if not self.has_model():
            raise FileNotFoundError(f"{self.model_path} missing: this node has not run its "
                                    "local phase in this run")
        model.load_state_dict(torch.load(self.model_path, weights_only=True))
        return model

    def save_array(self, name: str, array: np.ndarray) -> None:
        def write(path: Path) -> None:
            with path.open("wb") as fh:  # a handle, so np.save does not append ".npy"
                np.save(fh, array)

        _atomic_write(self.root / f"{name}.npy", write)

    def load_array(self, name: str) -> np.ndarray:
        return np.load(self.root / f"{name}.npy")

    def save_meta(self, meta: dict[str, Any]) -> None:
        _atomic_write(self.root / "meta.json", lambda p: p.write_text(json.dumps(meta)))

    def load_meta(self) -> dict[str, Any]:
        path = self.root / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {}
