"""Resume: a run killed with SIGKILL goes on from its last completed round, to the same end."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flower_gd.experiment import run_experiment
from flower_gd.results import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"method": "gossip-adaptive", "num-nodes": 3, "num-server-rounds": 4,
          "local-epochs": 1, "disc-epochs": 1, "common-limit": 120, "test-limit": 60,
          "round-epochs": 2, "run-name": "resumable"}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        found = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True)
        todo.extend(int(c) for c in found.stdout.split())
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (Ray's daemons and workers)."""
    for pid in reversed(_descendants(proc.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "rounds.csv").open()))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    summary = run_experiment({**CONFIG, "output-dir": str(out)})
    return summary, _rows(out / "resumable")


@pytest.mark.long_running
def test_a_killed_run_resumes_from_its_last_round_and_ends_the_same(tmp_path, uninterrupted):
    out = tmp_path / "runs"
    run_dir = out / "resumable"
    script = ("import sys; from flower_gd.experiment import run_experiment; "
              f"run_experiment({{**{CONFIG!r}, 'output-dir': sys.argv[1]}})")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # kill it once round 1 is complete
            point = run_dir / CHECKPOINT
            if point.is_file() and json.loads(point.read_text())["round"] >= 1:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("round 1 never completed")
    finally:
        _kill_tree(proc)
    killed_at = json.loads((run_dir / CHECKPOINT).read_text())["round"]
    assert killed_at < CONFIG["num-server-rounds"] and not (run_dir / "summary.json").exists()

    summary = run_experiment({**CONFIG, "output-dir": str(out)})  # the same command again

    rows = _rows(run_dir)
    # every round once, every node once per round; nothing before the checkpoint redone
    assert [(int(r["round"]), int(r["node"])) for r in rows] == [
        (rnd, n) for rnd in range(5) for n in range(3)]
    messages = list(csv.DictReader((run_dir / "messages.csv").open()))
    local = [m for m in messages if m["message_type"] == "train.local" and m["kind"] == "wire"]
    assert len(local) == 6  # one local phase: 3 instructions and 3 replies
    assert summary["rounds"] == 4
    # node state, relay random stream and seeds are restored: the same end as a whole run
    whole_summary, whole_rows = uninterrupted
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in whole_rows]
    assert summary["final"] == whole_summary["final"]
    assert summary["bytes"]["wire-up"] + summary["bytes"]["wire-down"] > 0
    # what the round-0 replies said survives the resume (bits per sample divide by it)
    assert summary["common-samples"] == whole_summary["common-samples"] > 0
