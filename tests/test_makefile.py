"""The Makefile's study stages: each leaves out of the choice it starts from the keys it
varies, so a rerun of `make bench-study` adds no candidate (checked with `make -n`, which
prints the commands with the choice read from a selection.json, and runs none)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
# Stands in for `python -m flower_gd.select DIR --overrides METHOD` (whose output
# tests/test_reporting.py checks): prints the method's settings from DIR/selection.json as
# overrides, or fails as the real one does when there is none; a real interpreter start per
# `chosen` would cost seconds each.
SELECT_STUB = """
import json, sys
args = sys.argv[1:]
root, method = args[args.index("flower_gd.select") + 1], args[args.index("--overrides") + 1]
sel = json.load(open(root + "/selection.json"))
if method not in sel:
    sys.exit(f"no selection for method {method!r}")
print(" ".join(f"app.{k}={v}" for k, v in sorted(sel[method]["settings"].items())))
"""


def _make(target: str, bench_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    stub = bench_dir / "select_stub.py"
    stub.write_text(SELECT_STUB)
    return subprocess.run(["make", "-n", "--no-print-directory", target,
                           f"PY={sys.executable} {stub}", "STAMP=", f"BENCH_DIR={bench_dir}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _commands(target: str, bench_dir: Path) -> list[str]:
    out = _make(target, bench_dir)
    assert out.returncode == 0, out.stderr
    text = out.stdout.replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if "-m flower_gd -m" in line]


@pytest.mark.parametrize("ga", [
    {},  # the defaults won
    {"gossip-peers": 1, "round-epochs": 1, "gossip-student": "fresh"},  # the second stage
    {"gossip-peers": 1, "round-epochs": 1, "temperature": 2.0},  # the third stage won too
])
def test_a_rerun_of_a_stage_adds_no_candidate(tmp_path, ga):
    (tmp_path / "selection.json").write_text(json.dumps({
        "gossip-adaptive": {"settings": ga},
        "dlad": {"settings": {"distill-epochs": 20, "temperature": 2.0}}}))
    (rounds,) = _commands("bench-study-rounds-run", tmp_path)
    ga_line, dlad_line = _commands("bench-study-temperature-run", tmp_path)
    # the second stage: 1 peer, 1 epoch, at the chosen student and weighting, temperature 1
    assert rounds.count("app.gossip-peers=") == rounds.count("app.round-epochs=") == 1
    assert "app.temperature" not in rounds
    assert ("app.gossip-student=fresh" in rounds) == ("gossip-student" in ga)
    # the third stage: temperature 2 at everything else chosen, once
    assert ga_line.count("app.temperature=") == 1 and "app.temperature=2.0" in ga_line
    for key in ("gossip-peers", "round-epochs", "gossip-student"):
        if key in ga:
            assert f"app.{key}={ga[key]}" in ga_line
    assert dlad_line.count("app.temperature=") == 1 and "app.distill-epochs=20" in dlad_line
    assert all(f"app.output-dir={tmp_path}" in c for c in (rounds, ga_line, dlad_line))


def test_bench_cells_run_each_method_at_its_choice_on_the_seeds_asked(tmp_path):
    (tmp_path / "selection.json").write_text(json.dumps({
        m: {"settings": {}} for m in ("gossip-adaptive", "dlad", "fedmd", "ds-fl",
                                      "dist-distill", "fedavg")} | {
        "fedavg": {"settings": {"lr": 0.02}}}))
    out = _make("bench-cells", tmp_path, "SEEDS=3,4")
    assert out.returncode == 0, out.stderr
    lines = [" ".join(line.split()) for line in out.stdout.splitlines()
             if "-m flower_gd -m" in line]
    methods = [next(w for w in line.split() if w.startswith("app.method=")) for line in lines]
    assert methods[:8] == ["app.method=gossip-adaptive", "app.method=dlad", "app.method=fedavg",
                           "app.method=fedmd", "app.method=ds-fl", "app.method=dist-distill",
                           "app.method=local,gossip", "app.method=central"]
    assert all("app.seed=3,4" in line for line in lines[:8])
    assert "app.lr=0.02" in lines[2]


def test_a_missing_choice_stops_make_instead_of_running_the_defaults(tmp_path):
    (tmp_path / "selection.json").write_text(json.dumps({"gossip-adaptive": {"settings": {}}}))
    out = _make("bench-study-temperature-run", tmp_path)
    assert out.returncode != 0
    assert "no choice of dlad" in out.stderr and "make bench-study" in out.stderr
    assert "app.method=dlad" not in out.stdout
