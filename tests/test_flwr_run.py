"""`flwr run .` runs a small gossip experiment the way Flower users start apps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pgrep(*args: str) -> list[int]:
    out = subprocess.run(["pgrep", *args], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _pids_of(marker: str) -> list[int]:
    """Processes whose command line names `marker`, and all their descendants."""
    found, todo = [], _pgrep("-f", marker)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(_pgrep("-P", str(pid)))
    return found


@pytest.fixture
def flwr_env(tmp_path):
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
    })
    yield env
    # `flwr run` leaves a detached local SuperLink: stop exactly the one this test started
    # (its command line names this test's FLWR_HOME), by PID, even when the test failed.
    for pid in _pids_of(env["FLWR_HOME"]):
        _signal(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while _pids_of(env["FLWR_HOME"]) and time.time() < deadline:
        time.sleep(0.5)
    for pid in _pids_of(env["FLWR_HOME"]):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited meanwhile
        pass


def _flwr(args: list[str], env: dict[str, str], timeout: int,
          tries: int = 3) -> subprocess.CompletedProcess[str]:
    """Run the `flwr` CLI. Flower waits a fixed 15 s for the local SuperLink it starts, then
    kills it; on a loaded 2-core machine (three pytest workers) the start can take longer,
    so that one failure, and only it, is tried again."""
    for _ in range(tries):
        done = subprocess.run(["flwr", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if "Failed to start local SuperLink within" not in done.stdout + done.stderr:
            break
    return done


@pytest.mark.long_running
def test_flwr_run_dot_runs_gossip_and_writes_results(flwr_env, tmp_path):
    setup = _flwr(["federation", "simulation-config", "@none/default", "local",
                   "--num-supernodes", "3", "--client-resources-num-cpus", "1"],
                  flwr_env, timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    out = tmp_path / "runs"
    run = _flwr(["run", ".", "--stream", "--run-config",
                 f'num-nodes=3 num-server-rounds=1 local-epochs=1 common-limit=60 '
                 f'test-limit=40 output-dir="{out}"'], flwr_env, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert run_dir.name == ("gossip_digits_iid_cnn_common-limit=60_local-epochs=1_num-nodes=3_"
                            "num-server-rounds=1_test-limit=40_s0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["num-nodes"] == 3
    assert summary["bytes"]["by-tag"]["scores"] > 0
