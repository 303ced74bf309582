"""Bad peers: who attacks, what they send, the robust mix, and rejection at decode in a run."""

import csv

import numpy as np
import pytest
import torch

from flower_gd.byzantine import byzantine_partitions, corrupt_arrays, corrupt_scores, flip_labels
from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.distill import clip_toward
from flower_gd.experiment import run_experiment


def _cfg(**overrides):
    return RunConfig.from_mapping(merge_overrides(load_defaults(), overrides))


def test_attackers_are_drawn_once_from_the_seed():
    three = byzantine_partitions(seed=0, num_nodes=10, attackers=3)
    assert len(three) == 3 and three <= set(range(10))
    assert three == byzantine_partitions(0, 10, 3)  # reproducible
    assert three != byzantine_partitions(1, 10, 3)  # another seed, other attackers
    assert byzantine_partitions(0, 10, 0) == set()


def test_what_an_attacker_sends_instead_of_its_list():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    np.testing.assert_array_equal(corrupt_scores(probs, "flip", "probs", 0),
                                  probs[:, [2, 1, 0]])
    noise = corrupt_scores(np.zeros((500, 10), np.float32), "random", "probs", 1)
    assert (noise >= 0).all() and np.allclose(noise.sum(1), 1.0, atol=1e-5)
    assert np.isnan(corrupt_scores(probs, "malformed", "probs", 0)).all()
    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])


def test_a_fedavg_attacker_sends_noise_of_each_tensors_scale():
    state = {"w": torch.ones(50, 50) * 3 + torch.randn(50, 50), "n": torch.tensor(7)}
    noisy = corrupt_arrays(state, "random", 0)
    assert noisy["n"] == 7  # integer buffers (BatchNorm counters) are left alone
    assert abs(float(noisy["w"].std()) - float(state["w"].std())) < 0.2
    assert torch.isnan(corrupt_arrays(state, "malformed", 0)["w"]).all()


def test_clipping_bounds_each_samples_move_by_the_radius():
    own = np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    peer = np.array([[0.0, 1.0], [0.6, 0.4]], dtype=np.float32)
    got = clip_toward(own, peer, radius=0.5)
    # sample 0: L1 distance 2 > 0.5, moved a quarter of the way; sample 1: 0.2 <= 0.5, kept
    np.testing.assert_allclose(got, [[0.75, 0.25], [0.6, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0)


TINY = {"num-nodes": 4, "num-server-rounds": 2, "local-epochs": 1, "common-limit": 120,
        "test-limit": 60, "disc-epochs": 1, "distill-epochs": 1, "byzantine-nodes": 1,
        "byzantine-attack": "malformed"}


@pytest.mark.parametrize("method", ["gossip", "gossip-adaptive", "dist-distill", "dlad"])
def test_malformed_payloads_are_rejected_at_decode_and_the_run_goes_on(tmp_path, method):
    summary = run_experiment({**TINY, "method": method, "output-dir": str(tmp_path)})
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    (attacker,) = summary["byzantine-partitions"]
    assert {r["node"] for r in rows if r["byzantine"] == "1"} == {str(attacker)}
    rejected = sum(int(r["payload_rejected"]) for r in rows)
    # only honest receivers reject (DLAD's server rejects the upload, recorded on its node)
    who = {r["node"] for r in rows if int(r["payload_rejected"])}
    assert who == {str(attacker)} if method == "dlad" else str(attacker) not in who
    attacker_id = next(r["node_id"] for r in rows if r["node"] == str(attacker))
    if method == "dlad":
        assert rejected == 1  # its one upload
    else:  # every NaN payload relayed from the attacker was refused, and nothing else
        messages = list(csv.DictReader((run_dir / "messages.csv").open()))
        relayed = [m for m in messages if m["kind"] == "p2p" and m["direction"] == "down"
                   and m["peer_id"] == attacker_id]
        assert rejected == len(relayed) > 0
    last = str(summary["rounds"])
    honest = [r for r in rows if r["round"] == last and r["node"] != str(attacker)]
    assert len(honest) == 3 and all(np.isfinite(float(r["loss"])) for r in honest)
