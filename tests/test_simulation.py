"""A 2-round gossip run on Flower's simulation engine writes the full results directory."""

import csv
import json

import pytest

from flower_gd.config import ConfigError
from flower_gd.data import DatasetNotFound
from flower_gd.experiment import run_experiment
from flower_gd.partitions import PartitionError

TINY = {"num-nodes": 3, "num-server-rounds": 2, "local-epochs": 2, "common-limit": 150,
        "test-limit": 80, "topology": "ring"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    summary = run_experiment({**TINY, "output-dir": str(out)})
    # the name lists every setting off the defaults that gossip reads, in key order
    name = ("gossip_digits_iid_cnn_common-limit=150_local-epochs=2_num-nodes=3_"
            "num-server-rounds=2_test-limit=80_topology=ring_s0")
    return out / name, summary


def test_results_directory_has_config_rounds_messages_and_summary(finished_run):
    run_dir, summary = finished_run
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "rounds.csv", "messages.csv",
                                                   "summary.json", "nodes"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["topology"] == "ring" and config["num-server-rounds"] == 2
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    assert [(int(r["round"]), int(r["node"])) for r in rows] == [(r, n) for r in range(3)
                                                                 for n in range(3)]
    assert summary["rounds"] == 2 and summary["num-nodes"] == 3
    # the summary is the median of the rows, round by round
    for rnd, median in summary["median-accuracy-per-round"].items():
        accs = sorted(float(r["accuracy"]) for r in rows if r["round"] == rnd)
        assert median == pytest.approx(accs[1])


def test_every_message_is_metered_and_only_lists_and_control_leave_nodes(finished_run):
    run_dir, summary = finished_run
    messages = list(csv.DictReader((run_dir / "messages.csv").open()))
    wire = [m for m in messages if m["kind"] == "wire"]
    # round 0: 3 local + 3 evaluate, each down and up; rounds 1-2: <=3 queries, 3 relays,
    # 3 evaluations, each down and up
    assert len([m for m in wire if m["round"] == "0"]) == 12
    assert {m["tag"] for m in wire} == {"scores", "control"}  # never weights, never data
    relays = [m for m in wire if m["message_type"] == "train.gossip"]
    assert len([m for m in relays if m["direction"] == "down"]) == 6
    # the payload: 150 x 10 float32 plus the relay message's object tree and the Fleet API
    # calls that move its objects (config, receipts, payload: about 2.4 KiB in all)
    payload = summary["bytes"]["payload-per-exchange"]
    assert 150 * 10 * 4 + 1024 < payload < 150 * 10 * 4 + 4096
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    assert sum(int(r["bytes_up"]) + int(r["bytes_down"]) for r in rows) == (
        summary["bytes"]["wire-up"] + summary["bytes"]["wire-down"])
    assert sum(int(r["p2p_bytes_down"]) for r in rows) == summary["bytes"]["p2p"]


def test_a_finished_run_is_skipped_not_recomputed(finished_run):
    run_dir, summary = finished_run
    again = run_experiment({**TINY, "output-dir": str(run_dir.parent)})
    assert again == summary


def test_a_finished_run_with_another_config_is_never_reused(finished_run):
    run_dir, _ = finished_run
    # another config gets another name; forced into the same directory, it is refused
    with pytest.raises(FileExistsError, match=r"differs in \['common-limit'\]"):
        run_experiment({**TINY, "common-limit": 100, "output-dir": str(run_dir.parent),
                        "run-name": run_dir.name})


@pytest.mark.parametrize("overrides, error, match", [
    ({"partiton-scheme": "iid"}, ConfigError, "unknown run-config key"),
    ({"partition-scheme": "niid1", "num-nodes": 200}, PartitionError, "private samples"),
    ({"dataset": "mnist", "data-dir": "/nonexistent"}, DatasetNotFound, "data-dir"),
])
def test_bad_configs_fail_before_the_simulation_starts(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        run_experiment({**TINY, "output-dir": str(tmp_path), **overrides})
    assert not any(tmp_path.iterdir())  # nothing was started, nothing half-written


@pytest.mark.parametrize("method", ["gossip-adaptive", "dlad"])
def test_a_mixed_fleet_runs_and_reports_accuracy_per_model_family(tmp_path, method):
    """Table VI at toy scale: CNN and MobileNetV3-small nodes share knowledge, not weights."""
    summary = run_experiment({**TINY, "method": method, "model": "cnn,mobilenet_v3_small",
                              "disc-epochs": 1, "distill-epochs": 1, "codec": "uint8",
                              "output-dir": str(tmp_path)})
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert run_dir.name.startswith(f"{method}_digits_iid_cnn+mobilenet_v3_small_codec=uint8")
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    assert {r["model"] for r in rows} == {"cnn", "mobilenet_v3_small"}
    assert set(summary["median-accuracy-per-model"]) == {"cnn", "mobilenet_v3_small"}
    messages = list(csv.DictReader((run_dir / "messages.csv").open()))
    tags = {m["tag"] for m in messages if m["direction"] == "up"}
    assert "weights" not in tags  # no node ever uploads a model
    if method == "gossip-adaptive":
        assert summary["rounds"] == 2
        # uint8 scores (150 x 10 bytes) + float16 log-weights (150 x 2), zlib where it pays,
        # plus the message's envelopes (about 3 KiB with the weights' objects)
        assert summary["bytes"]["payload-per-exchange"] < 150 * 12 + 4096
