"""Push-sum keeps the fleet's weight: whatever is lost or refused, no node creates or
destroys mass, so every belief tends to the fleet's weighted average."""

import json

import numpy as np
import pytest

from flower_gd.experiment import run_experiment
from strategies import gossip_adaptive as ga

TINY = {"method": "gossip-adaptive", "num-nodes": 5, "num-server-rounds": 3, "local-epochs": 2,
        "disc-epochs": 1, "common-limit": 100, "test-limit": 40, "gossip-peers": 2}


def _fleet_weight(run_dir, latest):
    """Sum over nodes of W_i per common sample, at round 0 or in each node's newest state."""
    total = 0.0
    for node in sorted((run_dir / "nodes").iterdir()):
        rounds = sorted(int(p.name[1:]) for p in node.glob("r*") if p.name[1:].isdigit())
        r = rounds[-1] if latest else 0
        total = total + np.load(node / f"r{r}" / f"{ga.SAMPLE_WEIGHTS}.npy")
    return total


@pytest.mark.parametrize("faults, evidence", [
    ({"message-loss": 0.2}, "lost"),
    ({"byzantine-nodes": 2, "byzantine-attack": "malformed"}, "refused"),
])
def test_the_fleets_weight_is_conserved_per_sample(tmp_path, faults, evidence):
    summary = run_experiment({**TINY, **faults, "output-dir": str(tmp_path)})
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    start, end = _fleet_weight(run_dir, latest=False), _fleet_weight(run_dir, latest=True)
    np.testing.assert_allclose(end, start, rtol=1e-6)
    # not vacuous: messages were lost, or payloads refused, along the way
    if evidence == "lost":
        assert summary["faults"]["lost-messages"] > 10
    else:
        rows = (run_dir / "rounds.csv").read_text().splitlines()
        header = rows[0].split(",")
        refused = sum(int(r.split(",")[header.index("payload_rejected")]) for r in rows[1:])
        assert refused > 0
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 3
