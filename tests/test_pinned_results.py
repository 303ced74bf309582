"""Pinned results: three tiny digits runs must reproduce what the code computed when the
method registry and the relay were introduced (a refactor must not change any result), the
later ones starting from the local phase the first one computed (sharing it must not either).

`pinned_results.json` was recorded from the code before that refactor (commit 148db65, this
machine: x86_64, torch 2.14.1 CPU, flwr 1.41). Who pulls from whom and how many messages of
each type cross the wire must match exactly. Accuracies matched exactly on the machine that
recorded them; another CPU can round differently in the last bits, which can flip a test
image, so each node's accuracy may differ by at most two test images (of 100). The cells
run without a validation set (`val-fraction=0`), which leaves the private and common sets
as they were before validation was carved out, and with one pass per epoch
(`min-epoch-steps=1`), the training loop as it was.
"""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from flower_gd.experiment import run_experiment

# the cells share one sweep directory: one worker runs them in order
pytestmark = pytest.mark.xdist_group("pinned")

PINNED = json.loads((Path(__file__).with_name("pinned_results.json")).read_text())
TINY = {"num-nodes": 4, "num-server-rounds": 2, "local-epochs": 10, "disc-epochs": 2,
        "distill-epochs": 10, "common-limit": 300, "test-limit": 100,
        # the split the pins were recorded with (no validation set), one pass per epoch,
        # no gradient clipping
        "val-fraction": 0.0, "min-epoch-steps": 1, "grad-clip": 0.0, "round-epochs": 1}
CELLS = {"gossip": {"method": "gossip"},
         # gossip-adaptive as its defaults were then (one epoch per round, the local student)
         "gossip-adaptive": {"method": "gossip-adaptive", "gossip-peers": 2,
                             "gossip-student": "local"},
         "dlad": {"method": "dlad"}}
TWO_IMAGES = 2 / TINY["test-limit"]


def fingerprint(run_dir: Path) -> dict:
    """What a run computed, free of the random node ids Flower assigns per run."""
    with (run_dir / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with (run_dir / "messages.csv").open() as fh:
        messages = list(csv.DictReader(fh))
    partition = {r["node_id"]: int(r["node"]) for r in rows}
    return {
        "accuracy": {f"{r['round']}/{r['node']}": round(float(r["accuracy"]), 6)
                     for r in rows if r["accuracy"]},
        "pulls": sorted(f"{m['round']}:{partition[m['peer_id']]}->{partition[m['node_id']]}"
                        for m in messages if m["kind"] == "p2p" and m["direction"] == "down"),
        "messages": dict(sorted(Counter(f"{m['round']} {m['direction']} {m['message_type']}"
                                        for m in messages if m["kind"] == "wire").items())),
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One output directory for the three cells, as a sweep has: the cells after the first
    start from the local phase it computed (same seed, data and model)."""
    return {"dir": tmp_path_factory.mktemp("sweep"), "done": []}


@pytest.mark.parametrize("cell", sorted(CELLS))  # dlad, gossip, gossip-adaptive
def test_a_run_reproduces_its_pinned_result(sweep, cell):
    run_experiment({**TINY, **CELLS[cell], "output-dir": str(sweep["dir"]), "run-name": cell})
    summary = json.loads((sweep["dir"] / cell / "summary.json").read_text())
    if "dlad" in sweep["done"]:  # its classifiers and discriminators are there to reuse
        assert all(v["reused"] == v["parts"] for v in summary["local-phase"].values())
    sweep["done"].append(cell)
    got, want = fingerprint(sweep["dir"] / cell), PINNED[cell]
    assert got["pulls"] == want["pulls"]  # the relay's random stream and peer choice
    assert got["messages"] == want["messages"]  # the protocol: every message type, per round
    assert got["accuracy"].keys() == want["accuracy"].keys()
    off = {k: (got["accuracy"][k], v) for k, v in want["accuracy"].items()
           if abs(got["accuracy"][k] - v) > TWO_IMAGES + 1e-9}
    assert not off, f"accuracies moved (got, pinned): {off}"
