"""From the meter's record of every message: what each method lets leave a node."""

import csv

import pytest

from flower_gd import methods
from flower_gd.experiment import run_experiment
from strategies import relay

TINY = {"num-nodes": 3, "num-server-rounds": 2, "local-epochs": 1, "disc-epochs": 1,
        "distill-epochs": 1, "common-limit": 150, "test-limit": 60}
# an upload of 150 x 10 float32 scores plus per-sample weights or confidences (4 bytes each)
# and Flower's framing; the CNN's weights message alone is ~290 kB
MAX_UPLOAD = 150 * 10 * 4 + 150 * 4 + 4096
SERVERLESS = [name for name, m in methods.REGISTRY.items() if relay.STEP in m.steps]
# nothing but inference lists moves, either way: up to a relay or a server, and back down
SCORES_ONLY = [name for name, m in methods.REGISTRY.items() if m.shares == {"scores"}
               and not m.global_model]


@pytest.mark.parametrize("method", ["gossip", "gossip-adaptive", "dist-distill", "dlad",
                                    "fedmd", "ds-fl", "fedavg"])
def test_only_what_the_registry_says_a_method_shares_leaves_a_node(tmp_path, method):
    run_experiment({**TINY, "method": method, "output-dir": str(tmp_path)})
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    messages = list(csv.DictReader((run_dir / "messages.csv").open()))
    up = [m for m in messages if m["direction"] == "up" and m["kind"] == "wire"]
    assert up, "no message was metered"
    shares = methods.get(method).shares
    tags = {m["tag"] for m in up}
    assert tags - {"control"} == set(shares)  # exactly what the registry declares
    assert "data" not in {m["tag"] for m in messages}  # no private sample ever moves
    if "weights" in shares:  # FedAvg's uploads are whole models
        assert all(int(m["nbytes"]) > MAX_UPLOAD for m in up if m["message_type"] == "train")
        return
    for m in up:  # and nothing big enough to hide a model in
        assert int(m["nbytes"]) <= MAX_UPLOAD, m
    if method in SCORES_ONLY:  # nothing moves that is not a list or control, either way
        assert {m["tag"] for m in messages} <= {"scores", "control"}


def test_the_registry_declares_the_serverless_methods():
    assert SERVERLESS == ["gossip", "gossip-adaptive", "dist-distill"]
    assert SCORES_ONLY == ["gossip", "gossip-adaptive", "dist-distill", "fedmd", "ds-fl"]
