"""A node's persistent state on disk: one snapshot per completed round, written as one unit.

In simulation Flower pickles the whole Context for every message, so weights and lists live
here, one directory per run and node, and `context.state` stays empty. Each round a node
finishes is a snapshot directory `r<round>/` (model, arrays, meta) written under a temporary
name and renamed into place, so a crash never leaves a model out of step with its inference
list. A step in round r reads the latest snapshot before r and writes `r<r>/`: rerunning a
round after a crash (resume) reads the same input and overwrites the same output.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
REPLY_FILE = "reply.json"  # the metrics a node answered for the round it committed
BUSY_FILE = "busy.csv"  # round, message type, seconds in the ClientApp, peak RSS (KiB)
KEEP_SNAPSHOTS = 2  # the newest two (a resumed round r+1 still finds round r's input) and r0


class Snapshot:
    """The committed state of a node after one round (0 = the local phase)."""

    def __init__(self, root: Path, server_round: int) -> None:
        self.root = root
        self.round = server_round

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def load_model(self, model: nn.Module) -> nn.Module:
        model.load_state_dict(torch.load(self.model_path, weights_only=True))
        return model

    def array(self, name: str) -> np.ndarray:
        return np.load(self.root / f"{name}.npy")

    @property
    def meta(self) -> dict[str, Any]:
        path = self.root / META_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


class NodeStore:
    """Snapshots of one node under `<run-dir>/nodes/node-<partition-id>/r<round>/`."""

    def __init__(self, run_dir: str | Path, partition_id: int) -> None:
        self.root = Path(run_dir) / "nodes" / f"node-{partition_id}"
        self.root.mkdir(parents=True, exist_ok=True)

    def rounds(self) -> list[int]:
        """Rounds with a committed snapshot, oldest first."""
        found = []
        for path in self.root.glob("r*"):
            if path.is_dir() and path.name[1:].isdigit():
                found.append(int(path.name[1:]))
        return sorted(found)

    def log_busy(self, message_type: str, server_round: int | None, seconds: float) -> None:
        """Append how long handling one message took and the peak resident memory of the
        process that handled it so far (read by `flower_gd.speed`)."""
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        with (self.root / BUSY_FILE).open("a") as fh:
            fh.write(f"{'' if server_round is None else server_round},{message_type},"
                     f"{seconds:.6f},{peak_kib}\n")

    def busy(self) -> list[tuple[str, str, float, int]]:
        """(round, message type, seconds, peak RSS KiB) of every message this node handled."""
        path = self.root / BUSY_FILE
        if not path.is_file():
            return []
        rows = [line.split(",") for line in path.read_text().splitlines() if line]
        return [(r, t, float(s), int(m)) for r, t, s, m in rows]

    def reply(self, server_round: int) -> dict[str, float] | None:
        """The metrics this node answered for `server_round`, if it completed that round."""
        path = self.root / f"r{server_round}" / REPLY_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def save_reply(self, server_round: int, metrics: dict[str, float]) -> None:
        """Remember the answer of a committed round, so a re-sent step replays it."""
        folder = self.root / f"r{server_round}"
        if folder.is_dir():
            tmp = folder / (REPLY_FILE + ".tmp")
            tmp.write_text(json.dumps(metrics))
            tmp.replace(folder / REPLY_FILE)

    def snapshot(self, at_most: int | None = None) -> Snapshot:
        """The newest snapshot of a round <= `at_most` (any round when None).

        Raises
        ------
        FileNotFoundError
            When there is none: the node has not finished its local phase in this run.
        """
        rounds = [r for r in self.rounds() if at_most is None or r <= at_most]
        if not rounds:
            raise FileNotFoundError(
                f"{self.root} holds no state up to round {at_most}: this node has not "
                "finished its local phase in this run (did it fail or drop out?)")
        return Snapshot(self.root / f"r{rounds[-1]}", rounds[-1])

    def commit(self, server_round: int, model: nn.Module | None = None,
               arrays: dict[str, np.ndarray] | None = None, meta: dict[str, Any] | None = None,
               carry_model_from: Snapshot | None = None) -> Snapshot:
        """Write the state after `server_round` as one unit, replacing any earlier attempt.

        `carry_model_from` reuses another snapshot's model file when the model did not change.
        Round 0 (the local phase) starts the run afresh: the later snapshots, saved replies
        and busy log of an earlier attempt in this directory (a killed run that did not
        resume) are removed, so no later round can start from them.
        """
        final = self.root / f"r{server_round}"
        tmp = self.root / f"r{server_round}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        if model is not None:
            torch.save(model.state_dict(), tmp / MODEL_FILE)
        elif carry_model_from is not None and carry_model_from.has_model():
            shutil.copyfile(carry_model_from.model_path, tmp / MODEL_FILE)
        for name, array in (arrays or {}).items():
            with (tmp / f"{name}.npy").open("wb") as fh:  # a handle: np.save adds no suffix
                np.save(fh, array)
        (tmp / META_FILE).write_text(json.dumps({**(meta or {}), "round": server_round}))
        if final.exists():  # a rerun of this round (resume) replaces its earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
        if server_round == 0:
            for later in self.rounds()[1:]:
                shutil.rmtree(self.root / f"r{later}", ignore_errors=True)
            (self.root / BUSY_FILE).unlink(missing_ok=True)
        for old in self.rounds()[:-KEEP_SNAPSHOTS]:
            if old != 0:  # the local phase stays: what every later round started from
                shutil.rmtree(self.root / f"r{old}", ignore_errors=True)
        return Snapshot(final, server_round)
