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


def _push_sum_rounds(beliefs, weights, peers, rounds, rng):
    """Synchronous rounds of gossip-adaptive's push-sum with the node-side functions: each
    node pulls `peers` random others; a pulled node splits its W among itself and its
    pullers (`push_sum_split`), every puller mixes what it got (`weighted_mix`)."""
    from flower_gd.distill import weighted_mix

    n = len(beliefs)
    for _ in range(rounds):
        pulls = [rng.choice([j for j in range(n) if j != i], peers, replace=False)
                 for i in range(n)]
        pullers = np.bincount(np.concatenate(pulls), minlength=n)
        split = [ga.push_sum_split(w, [int(p)] if p else [])
                 for w, p in zip(weights, pullers, strict=True)]
        mixed = [weighted_mix(beliefs[i], split[i], [beliefs[j] for j in pulls[i]],
                              [split[j] for j in pulls[i]]) for i in range(n)]
        beliefs, weights = [b for b, _ in mixed], [w for _, w in mixed]
    return beliefs, weights


@pytest.mark.parametrize("weighting", ["ratio", "dlad"])
def test_each_weighting_tends_to_its_closed_form_limit(weighting):
    """`ratio` tends to sum_i r_i B_i / sum_i r_i (r = d/(1-d)); `dlad` tends to DLAD's
    per-sample target sum_i d_i B_i / sum_i d_i, computed by DLAD's own `adaptive_target`."""
    from flower_gd.distill import adaptive_target

    rng = np.random.default_rng(3)
    nodes, samples, classes = 8, 50, 10
    beliefs = rng.dirichlet(np.ones(classes), size=(nodes, samples))
    d = rng.uniform(0.02, 0.98, size=(nodes, samples))
    weights = [ga.initial_weights(d[i], weighting) for i in range(nodes)]
    final, final_w = _push_sum_rounds(list(beliefs), weights, peers=2, rounds=80, rng=rng)
    w0 = d / (1 - d) if weighting == "ratio" else d
    closed = np.einsum("in,inc->nc", w0 / w0.sum(0), beliefs)
    for b in final:
        np.testing.assert_allclose(b, closed, atol=1e-7)
    np.testing.assert_allclose(sum(final_w), w0.sum(0), rtol=1e-9)  # mass conserved
    dlad = adaptive_target(beliefs, d).astype(np.float64)
    agree = np.abs(final[0] - dlad).max() < 1e-5  # float32 target: 1e-5, not 1e-7
    assert agree == (weighting == "dlad")  # and the ratio limit is another point


def test_accumulate_bookkeeping_rescales_without_changing_the_mix():
    """`accumulate` keeps every received weight: unscaled, the fleet's weight triples a round
    with 2 peers and passes the decoder's 1e30 within about 60 rounds. The common rescale
    keeps it bounded and changes no belief (the mix reads ratios only)."""
    from flower_gd.distill import weighted_mix

    rng = np.random.default_rng(5)
    n, peers = 6, 2
    beliefs = list(rng.dirichlet(np.ones(4), size=(n, 20)))
    d = rng.uniform(0.02, 0.98, size=(n, 20))
    plain = scaled = [ga.initial_weights(d[i], "ratio") for i in range(n)]
    b_plain = b_scaled = beliefs
    for r in range(200):
        pulls = [rng.choice([j for j in range(n) if j != i], peers, replace=False)
                 for i in range(n)]
        step = [weighted_mix(b_scaled[i], scaled[i], [b_scaled[j] for j in pulls[i]],
                             [scaled[j] for j in pulls[i]]) for i in range(n)]
        b_scaled = [b for b, _ in step]
        scaled = [ga.accumulate_rescale(w, peers) for _, w in step]
        if r < 20:
            step = [weighted_mix(b_plain[i], plain[i], [b_plain[j] for j in pulls[i]],
                                 [plain[j] for j in pulls[i]]) for i in range(n)]
            b_plain, plain = [b for b, _ in step], [w for _, w in step]
            for a, b in zip(b_plain, b_scaled, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6)
    assert max(float(np.max(w)) for w in plain) > 1e8  # unscaled: 20 rounds, already huge
    assert all(np.isfinite(w).all() and np.max(w) < 1e6 for w in scaled)
