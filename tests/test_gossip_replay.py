"""The belief replay reproduces a real gossip-adaptive run, then varies only the codec."""

import csv
import json
import shutil
import statistics

import numpy as np
import pytest

from flower_gd.experiment import run_experiment
from flower_gd.federation import federated_data
from strategies import gossip_replay as gr

# niid1 and two peers a round, so that mixing moves beliefs and push-sum splits shares;
# hard4p1, so that the replay must reproduce the quantization of beliefs and weights too
TINY = {"method": "gossip-adaptive", "codec": "hard4p1", "num-nodes": 5,
        "num-server-rounds": 3, "local-epochs": 2, "disc-epochs": 1, "round-epochs": 1,
        "common-limit": 150, "test-limit": 80, "partition-scheme": "niid1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny hard4p1 run and its float32 twin (same seed, so the same local phase and the
    same pull graph: the relay's random stream does not depend on the codec)."""
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for codec in ("hard4p1", "float32"):
        run_experiment({**TINY, "codec": codec, "output-dir": str(out)})
        (made[codec],) = [p for p in out.iterdir() if p.is_dir() and p not in made.values()
                          and not p.name.startswith(".")]
    return made


@pytest.fixture(scope="module")
def finished_run(runs):
    return runs["hard4p1"]


def test_the_replay_of_a_runs_own_codec_gives_its_beliefs_exactly(finished_run):
    saved = gr.load(finished_run)
    assert saved.last_round == 3 and len(saved.pulls) == 3
    assert all(len(srcs) == 2 for pulls in saved.pulls.values() for srcs in pulls.values())
    assert gr.check(saved) == 0.0
    # and round by round: the median label accuracy the nodes reported
    history, _ = gr.replay(saved, gr.Variant(codec="hard4p1"))
    truth = federated_data(saved.cfg, saved.cfg.num_nodes).common_y
    rows = list(csv.DictReader((finished_run / "rounds.csv").open()))
    for server_round, beliefs in enumerate(history, start=1):
        reported = statistics.median(float(r["label_accuracy"]) for r in rows
                                     if int(r["round"]) == server_round)
        assert gr.label_accuracy(beliefs, truth) == pytest.approx(reported, abs=1e-12)


def test_the_float32_twin_replayed_under_hard4p1_ends_where_the_real_hard4p1_run_did(runs):
    """The replay's counterfactual is what a run with that codec computes."""
    twin, real = gr.load(runs["float32"]), gr.load(runs["hard4p1"])
    assert twin.pulls == real.pulls
    history, _ = gr.replay(twin, gr.Variant(codec="hard4p1"))
    assert all(np.array_equal(a, b) for a, b in zip(history[-1], real.final, strict=True))
    exact, _ = gr.replay(twin, gr.Variant(codec="float32"))
    assert not all(np.array_equal(a, b) for a, b in zip(exact[-1], real.final, strict=True))


def test_another_codec_changes_the_beliefs_and_float32_sends_more(finished_run):
    saved = gr.load(finished_run)
    exact, exact_size = gr.replay(saved, gr.Variant(codec="float32"))
    lossy, lossy_size = gr.replay(saved, gr.Variant(codec="hard4p1"))
    assert max(np.abs(a - b).max() for a, b in zip(exact[-1], lossy[-1], strict=True)) > 1e-3
    assert exact_size > 10 * lossy_size
    # exact weights change the mix (hard4p1 rounds log-weights to 15 levels)
    weights_only, _ = gr.replay(saved, gr.Variant(codec="hard4p1", exact_weights=True))
    assert max(np.abs(a - b).max() for a, b in zip(weights_only[-1], lossy[-1], strict=True)) > 0


def test_error_feedback_changes_only_what_a_lossy_codec_sends(runs):
    """A lossless codec leaves no residual (the replay is the plain one, bit for bit); a
    lossy one's residual changes what is sent from the second payload on."""
    twin = gr.load(runs["float32"])
    plain, _ = gr.replay(twin, gr.Variant(codec="float32"))
    fed, _ = gr.replay(twin, gr.Variant(codec="float32", error_feedback=True))
    assert all(np.array_equal(a, b) for a, b in zip(plain[-1], fed[-1], strict=True))
    lossy, _ = gr.replay(twin, gr.Variant(codec="hard4p1"))
    lossy_fed, _ = gr.replay(twin, gr.Variant(codec="hard4p1", error_feedback=True))
    assert all(np.array_equal(a, b) for a, b in zip(lossy[0], lossy_fed[0], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(lossy[-1], lossy_fed[-1], strict=True))
    assert all(np.allclose(b.sum(axis=1), 1.0) for b in lossy_fed[-1])
    assert gr.Variant(codec="hard4p1", error_feedback=True).name == "hard4p1 error-feedback"


def test_a_residual_is_sent_as_a_distribution_by_hand():
    belief = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    wanted = np.array([[0.9, 0.3, -0.2], [-0.1, -0.2, -0.1]])  # row 2: no mass left
    out = gr.as_distribution(wanted, belief)
    assert out.dtype == np.float32
    assert np.allclose(out[0], [0.75, 0.25, 0.0]) and np.array_equal(out[1], belief[1])


def test_fill_own_spreads_the_rest_like_the_receivers_belief_by_hand():
    decoded = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    own = np.array([[0.5, 0.3, 0.0, 0.2], [0.0, 1.0, 0.0, 0.0]])
    filled = gr.fill_like(decoded, own)
    # sample 0: 0.3 off the label, split 0.3 : 0.0 : 0.2 -> 0.18, 0, 0.12;
    # sample 1 (label 0): own has all its mass on class 1 -> 0.75 there
    np.testing.assert_allclose(filled, [[0.7, 0.18, 0.0, 0.12], [0.25, 0.75, 0.0, 0.0]])
    # where own has no mass off the label, the rest stays even
    np.testing.assert_allclose(gr.fill_like(decoded[:1], np.array([[1.0, 0, 0, 0]])),
                               decoded[:1])


def test_runs_whose_beliefs_depend_on_more_than_the_codec_are_refused(finished_run, tmp_path):
    copy = tmp_path / finished_run.name
    copy.mkdir()
    for name in ("summary.json", "rounds.csv", "messages.csv"):
        (copy / name).write_bytes((finished_run / name).read_bytes())
    config = json.loads((finished_run / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "gossip-share": "reinfer"}))
    with pytest.raises(gr.ReplayError, match="gossip-share"):
        gr.load(copy)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(gr.ReplayError, match="nodes/"):  # snapshots are not committed
        gr.load(copy)
    with pytest.raises(gr.ReplayError, match="fill=own"):
        gr.replay(gr.load(finished_run), gr.Variant(codec="float32", fill="own"))


def test_two_lloyd_levels_are_hard4p1s_codebook():
    from flower_gd.payload_codecs.hard4p1 import top_floor, top_levels

    rng = np.random.default_rng(0)
    for _ in range(10):
        top = rng.uniform(0.1, 1.0, 300)
        levels, index = gr.lloyd_levels(top, 2, top_floor(10))
        np.testing.assert_array_equal(levels, top_levels(top, top_floor(10)))
        np.testing.assert_array_equal(index, top > levels.mean())


@pytest.mark.parametrize("name", [c for c in gr.CANDIDATES if not c.endswith(gr.AC_SUFFIX)])
def test_candidates_keep_the_label_sum_to_one_and_cost_more_than_hard4p1(name):
    rng = np.random.default_rng(1)
    belief = rng.dirichlet(np.full(10, 0.3), size=400)
    weights = rng.uniform(0.1, 5.0, 400)
    base, _, base_size = gr._sent(belief, weights, gr.Variant("hard4p1"))
    scores, _, size = gr.candidate(name, belief, weights)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    np.testing.assert_array_equal(scores.argmax(axis=1), belief.argmax(axis=1))
    assert size > base_size + len(belief) // 16  # at least a 4-bit field for 1/8 of the samples
    # each sends more of the belief: its decode is nearer the sent belief than hard4p1's
    assert np.abs(scores - belief).sum() < np.abs(base - belief).sum()


@pytest.mark.parametrize("n", [1, 7, 500])
def test_an_arithmetic_coded_candidate_decodes_from_its_own_bytes_as_its_packed_twin(n):
    rng = np.random.default_rng(n)
    belief = rng.dirichlet(np.full(10, 0.3), size=n)
    weights = rng.uniform(0.1, 5.0, n)
    twin = gr._sent(belief, weights, gr.Variant("hard4p1"))
    scores, decoded_w, record = gr.candidate_payload("hard4p1-ac", belief, weights)
    np.testing.assert_allclose(scores, twin[0], atol=1e-6)
    np.testing.assert_array_equal(decoded_w, twin[1])
    # what a receiver rebuilds from the sealed bytes alone is that decode: the stream holds
    # every field the size counts
    from_bytes, weights_from_bytes = gr.decode_ac(record, belief.shape, "hard4p1-ac")
    np.testing.assert_allclose(from_bytes, scores, atol=1e-6)
    np.testing.assert_allclose(weights_from_bytes, decoded_w, rtol=1e-6)
    assert gr.candidate("hard4p1-ac", belief, weights)[2] == gr._size(record)


@pytest.mark.parametrize("n", [1, 7, 500])
def test_the_codec_hard4p2r1_ac_decodes_as_the_screens_packed_candidate(n):
    """The codec's scores are the screen's candidate's: what a receiver decodes from its bytes
    is the packed hard4p2r1 candidate's decode (`make bench-replay` screened it)."""
    rng = np.random.default_rng(n)
    belief = rng.dirichlet(np.full(10, 0.3), size=n)
    weights = rng.uniform(0.1, 5.0, n)
    from flower_gd.payload_codecs.hard4p2r1_ac import level_weights, weight_levels

    twin_scores, _, _ = gr.candidate("hard4p2r1", belief, weights)
    scores, decoded_w, _ = gr._sent(belief, weights, gr.Variant("hard4p2r1-ac"))
    np.testing.assert_allclose(scores, twin_scores, atol=1e-6)
    # its weights are coarser than the candidate's (11 levels, not hard4's 15)
    np.testing.assert_allclose(decoded_w, level_weights(*weight_levels(weights)), rtol=1e-12)


def test_the_command_reports_the_check_and_a_table_and_leaves_out_what_it_cannot_replay(
        finished_run, tmp_path, capsys):
    altered = tmp_path / finished_run.name.replace("_s0", "_s1")
    shutil.copytree(finished_run, altered)
    belief = altered / "nodes" / "node-0" / "r0" / "belief.npy"
    np.save(belief, np.load(belief)[:, ::-1])  # no longer what the run started from
    crashed = tmp_path / finished_run.name.replace("_s0", "_s2")
    shutil.copytree(finished_run, crashed)
    rows = (crashed / "rounds.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = rows[-1].split(",")
    last[header.index("failed_pulls")] = "1"
    (crashed / "rounds.csv").write_text("\n".join([*rows[:-1], ",".join(last)]) + "\n")
    gr.main([str(finished_run), str(altered), str(crashed), "--codec", "float32", "--codec",
             "hard4p1", "--fill-own"])
    out = capsys.readouterr().out
    assert "differ from the saved ones by at most 0.00e+00" in out
    assert "not reproduced: left out" in out  # the altered copy
    assert "left out: " in out and "failed_pulls=1" in out  # the retried pull
    assert "| hard4p1 fill=own |" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| hard4p1 |")]
    assert row.count("(1 seed)") == 1  # only the real run was paired
