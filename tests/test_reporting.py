"""Tables and every figure from a small saved-results fixture; a mini-sweep that skips
finished cells."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flower_gd import plots
from flower_gd.config import load_defaults
from flower_gd.metering import MeterEntry
from flower_gd.report import write_report
from flower_gd.results import RunRecorder
from flower_gd.tables import accuracy_table, bytes_table, load_runs, shared_settings

ROOT = Path(__file__).resolve().parents[1]


class _Meter:
    def __init__(self):
        self.entries = []

    def collect_late(self):
        return 0


def _saved_run(root: Path, method: str, partition: str, seed: int, accs: list[float],
               payload: int, tag: str, common: int = 0, **extra) -> None:
    """Write one run directory in the real format: config, rounds.csv, messages, summary."""
    cfg = {**load_defaults(), "method": method, "partition-scheme": partition, "seed": seed,
           "num-nodes": 2, "num-server-rounds": len(accs) - 1, **extra}
    meter = _Meter()
    models = cfg["model"].split(",")
    name = f"{method}_{partition}_{'+'.join(models)}_{extra.get('codec', '')}_s{seed}" + "".join(
        f"_{k}{v}" for k, v in sorted(extra.items()) if k not in ("codec", "model",
                                                                  "num-server-rounds"))
    rec = RunRecorder(root / name, cfg, meter, lambda pid: models[pid % len(models)])
    rec.add_node(101, 0)
    rec.add_node(102, 1)
    for rnd, acc in enumerate(accs):
        for node in (101, 102):
            if rnd > 0:
                meter.entries.append(MeterEntry(rnd, "down", node, "train", tag, payload))
                if tag == "scores":
                    meter.entries.append(
                        MeterEntry(rnd, "down", node, "train", tag, payload, "p2p", 1))
            rec.record(rnd, node, {"accuracy": acc + (0.01 if node == 101 else -0.01), "loss": 1.0,
                                   **({"common-samples": float(common)} if common else {})})
        rec.end_round(rnd)
    rec.finalize({"label-leak": cfg["label-source"] == "ground-truth"})  # as the ServerApp


@pytest.fixture
def results(tmp_path):
    for seed in (0, 1):
        for partition in ("iid", "niid1"):
            _saved_run(tmp_path, "gossip", partition, seed, [0.5, 0.55 + 0.01 * seed, 0.6],
                       40_000, "scores")
            _saved_run(tmp_path, "fedavg", partition, seed, [0.4, 0.7, 0.8], 300_000, "weights")
    return tmp_path


@pytest.fixture
def variants(results):
    """Adds codec variants and a mixed fleet of gossip-adaptive to the fixture."""
    for codec, payload, acc in (("float32", 40_000, 0.7), ("uint8", 4_000, 0.69)):
        _saved_run(results, "gossip-adaptive", "niid1", 0, [0.5, 0.6, acc], payload, "scores",
                   common=600, codec=codec, **{"num-server-rounds": 5})
    _saved_run(results, "gossip-adaptive", "niid1", 0, [0.5, 0.6, 0.5], 40_000, "scores",
               model="cnn,mobilenet_v3_small", **{"num-server-rounds": 5})
    for attackers, robust, acc in ((1, "none", 0.6), (1, "clip", 0.65), (0, "clip", 0.66)):
        _saved_run(results, "gossip-adaptive", "niid1", 0, [0.5, 0.6, acc], 40_000, "scores",
                   **{"num-server-rounds": 5, "byzantine-nodes": attackers,
                      "robust-mix": robust})
    return results


def test_tables_from_saved_results(results):
    runs = load_runs(results)
    header, body = accuracy_table(runs)
    assert header == ["dataset", "model", "method", "iid", "niid1"]
    gossip = next(r for r in body if r[2] == "gossip")
    assert gossip[3].startswith("0.6000 ± 0.0000 (2)")
    header, body = bytes_table(runs)
    assert header[:3] == ["dataset", "model", "method"]
    fed = next(r for r in body if r[2] == "fedavg")
    gos = next(r for r in body if r[2] == "gossip")
    assert fed[5] == "300000"  # model message measured from the weights traffic
    assert gos[3] == "40000" and gos[6] == f"{40000 / 300000:.3f}"
    text = write_report(results, with_models=False)
    assert (results / "results.md").read_text() == text
    assert (results / "results.csv").read_text().count("\n") == 1 + 8


def test_codec_and_model_family_tables(variants):
    from flower_gd.tables import codec_table, model_family_table

    runs = load_runs(variants)
    shared = shared_settings(runs)
    assert shared == {"num-nodes": 2}  # said once above the tables, in no label
    labels = {r.label(shared) for r in runs}
    assert {"gossip-adaptive", "gossip-adaptive codec=uint8",
            "gossip num-server-rounds=2"} <= labels
    header, body = codec_table(runs)
    rows = [dict(zip(header, r, strict=True)) for r in body]
    uint8 = next(r for r in rows if r["codec"] == "uint8")
    # the payload counted here is the last round's message of the saved meter: 4000 vs 40000
    assert uint8["x fewer than default"] == "10.0"
    assert uint8["vs default (points, paired)"] == "-1.00 (1 seed)"
    assert uint8["method"] == "gossip-adaptive"  # grouped by config values, codec aside
    header, body = model_family_table(runs)
    families = {r[header.index("family")]: r[header.index("final median acc.")] for r in body}
    assert families == {"cnn": "0.5100 (1 seed)", "mobilenet_v3_small": "0.4900 (1 seed)"}
    text = write_report(variants, with_models=False)
    assert "Payload codecs" in text and "accuracy per model family" in text


def test_the_codec_table_pairs_seeds_and_counts_bits_per_common_sample(tmp_path):
    from flower_gd.tables import codec_table

    # float32 by seed: 0.70, 0.72; hard4: 0.69 (seed 0), 0.72 (seed 1): paired -1, 0 points
    for codec, payload, accs in (("float32", 240_000, (0.70, 0.72)),
                                 ("hard4", 3_000, (0.69, 0.72))):
        for seed, acc in enumerate(accs):
            _saved_run(tmp_path, "gossip-adaptive", "niid1", seed, [0.5, acc], payload,
                       "scores", common=6000, codec=codec)
    header, body = codec_table(load_runs(tmp_path))
    rows = {r[header.index("codec")]: dict(zip(header, r, strict=True)) for r in body}
    assert rows["hard4"]["bits per common sample"] == "4.0"  # 8 x 3000 / 6000
    assert rows["float32"]["bits per common sample"] == "320.0"
    assert rows["hard4"]["x fewer than default"] == "80.0"
    assert rows["hard4"]["final median acc."] == "0.7050 ± 0.1906 (2)"
    # t(1) = 12.706 over the differences (-1, 0): -0.50 ± 6.35; a cross-seed pairing would
    # give (-3, +2) or (0, -1) instead
    assert rows["hard4"]["vs default (points, paired)"] == "-0.50 ± 6.35 (2) n.d."
    assert rows["hard4"]["inside default's interval"] == "yes"
    assert rows["float32"]["vs default (points, paired)"] == "–"


def test_byzantine_runs_have_their_own_table_and_stay_out_of_the_comparison(variants):
    from flower_gd.tables import byzantine_table

    runs = load_runs(variants)
    header, body = byzantine_table(runs)
    assert header == ["dataset", "model", "partition", "method", "attack", "0 attacker(s)",
                      "1 attacker(s)", "most attackers vs none (points, paired)"]
    rows = {r[3]: r[5:] for r in body}
    # the 0 cell is the cnn run (0.70), not the mixed fleet's (0.50) of the same seed
    assert rows == {"gossip-adaptive": ["0.7000 (1 seed)", "0.6000 (1 seed)",
                                        "1 vs 0: -10.00 (1 seed)"],
                    "gossip-adaptive robust-mix=clip": ["0.6600 (1 seed)", "0.6500 (1 seed)",
                                                        "1 vs 0: -1.00 (1 seed)"]}
    header, body = accuracy_table([r for r in runs if r.clean])
    assert not any("byzantine" in r[2] or "robust" in r[2] for r in body)
    assert "Byzantine nodes" in write_report(variants, with_models=False)


def test_the_byzantine_table_pairs_attacked_runs_with_their_own_seed(tmp_path):
    from flower_gd.tables import byzantine_table

    # gossip iid: 0.80 / 0.70 without attackers (seeds 0 / 1), 0.75 / 0.69 with 3 attackers:
    # paired -5 and -1 points; across seeds it would read -11 or +5
    for seed, (clean, attacked) in enumerate(((0.80, 0.75), (0.70, 0.69))):
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, clean], 40_000, "scores")
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, attacked], 40_000, "scores",
                   **{"byzantine-nodes": 3, "byzantine-attack": "flip"})
    _saved_run(tmp_path, "gossip", "niid1", 0, [0.5, 0.6], 40_000, "scores")  # no attack
    header, body = byzantine_table(load_runs(tmp_path))
    assert len(body) == 1 and body[0][2] == "iid"  # niid1 had no attacked run: no line
    row = dict(zip(header, body[0], strict=True))
    assert row["0 attacker(s)"] == "0.7500 ± 0.6353 (2)"
    # mean -3, sd 2.828 / sqrt 2 = 2, t(1) = 12.706: -3.00 ± 25.41
    assert row["most attackers vs none (points, paired)"] == "3 vs 0: -3.00 ± 25.41 (2) n.d."


def test_a_run_repeated_in_a_cell_is_an_error_not_a_mean(tmp_path):
    import shutil

    from flower_gd.tables import fault_table

    _saved_run(tmp_path, "gossip", "iid", 0, [0.5, 0.6], 40_000, "scores")
    _saved_run(tmp_path, "gossip", "iid", 0, [0.5, 0.5], 40_000, "scores",
               **{"message-loss": 0.1})
    [faulty] = [p for p in tmp_path.iterdir() if "message-loss" in p.name]
    shutil.copytree(faulty, tmp_path / "copy-of-the-faulty-run")
    with pytest.raises(ValueError, match="repeats a cell and seed"):
        fault_table(load_runs(tmp_path))


def test_fault_runs_are_tabulated_beside_their_clean_run(variants):
    from flower_gd.tables import fault_table

    # clean gossip iid: 0.60 for both seeds (the fixture); with faults: 0.58, 0.61; the
    # same on a mixed fleet (seed 0, 0.40 clean) is its own group, never mixed into the cnn's
    for seed, acc in ((0, 0.58), (1, 0.61)):
        _saved_run(variants, "gossip", "iid", seed, [0.5, 0.5, acc], 40_000, "scores",
                   **{"drop-nodes": "1@2", "message-loss": 0.1})
    _saved_run(variants, "gossip", "iid", 0, [0.5, 0.5, 0.4], 40_000, "scores",
               model="cnn,cnn-wide")
    _saved_run(variants, "gossip", "iid", 0, [0.5, 0.5, 0.3], 40_000, "scores",
               model="cnn,cnn-wide", **{"drop-nodes": "1@2", "message-loss": 0.1})
    header, body = fault_table(load_runs(variants))
    rows = [dict(zip(header, r, strict=True)) for r in body
            if r[3].startswith("gossip ") and r[2] == "iid" and r[1] == "cnn"]
    # one row per fault setting over both seeds, the clean one first; equal in the rest
    assert [r["faults"] for r in rows] == ["none", "drop-nodes=1@2 message-loss=0.1"]
    assert rows[0]["final median acc."] == "0.6000 ± 0.0000 (2)"
    assert rows[1]["final median acc."] == "0.5950 ± 0.1906 (2)"
    # by seed -2 and +1 points: -0.50 ± t(1) = 12.706 x sd 2.121 / sqrt 2 = 19.06
    assert rows[1]["vs no faults (points, paired)"] == "-0.50 ± 19.06 (2) n.d."
    assert rows[0]["vs no faults (points, paired)"] == "–"
    fleet = [r for r in body if r[1] == "cnn,cnn-wide"]
    assert [r[header.index("vs no faults (points, paired)")] for r in fleet] == [
        "–", "-10.00 (1 seed)"]


@pytest.mark.parametrize("figure", sorted(plots.FIGURES))
def test_every_figure_draws_what_the_saved_runs_hold(variants, tmp_path, figure, monkeypatch):
    drawn = []
    markers: set = set()
    save = plots._save

    def spy(fig, out, name):
        boxes = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
        legends = [t.get_text() for box in boxes for t in box.get_texts()]
        marks = sum(len(ax.lines) + len(ax.patches) for ax in fig.axes)
        drawn.append((name, set(legends), marks))
        markers.update(line.get_marker() for ax in fig.axes for line in ax.lines)
        return save(fig, out, name)

    monkeypatch.setattr(plots, "_save", spy)
    out = tmp_path / "figs"
    plots.main([figure, str(variants), "--out", str(out)])
    assert {f.suffix for f in out.iterdir()} == {".png", ".pdf"}
    assert len(list(out.iterdir())) == 2 * len(drawn) > 0
    assert all(marks > 0 for _, _, marks in drawn)  # every figure draws data
    legends = set().union(*(texts for _, texts, _ in drawn))
    runs = [r for r in load_runs(variants) if r.clean]
    if figure == "fig1":
        assert legends == {"gossip payload", "gossip-adaptive payload", "model (weights message)"}
    elif figure in ("fig2", "fig3", "fig4"):  # one configuration per method: the main runs
        main = plots.main_runs(runs)
        assert legends == {r.label(shared_settings(main)) for r in main}
        assert {r.method for r in main} == {"gossip", "gossip-adaptive", "fedavg"}
    elif figure == "fig6":
        assert legends == {"gossip-adaptive (flip)", "gossip-adaptive robust-mix=clip (flip)"}
    elif figure == "fig7":  # the main runs, every codec variant, and the front
        shown = plots.main_runs(runs) + [r for r in runs if "codec" in r.settings]
        assert legends == {r.label(shared_settings(shown)) for r in shown} | {"Pareto front"}
        assert any("codec=uint8" in label for label in legends)
        assert {"o", plots.CODEC_MARKERS["uint8"]} <= markers  # a codec keeps the color, not
        # the marker, of its method's float32 point


def test_the_same_runs_redraw_the_same_bytes(variants, tmp_path, monkeypatch):
    """A redrawn figure is byte-identical (no creation date in the PDF): regenerating the
    figures from unchanged runs leaves nothing to commit."""
    def draw(out, epoch):  # matplotlib would date the PDF by SOURCE_DATE_EPOCH, else today
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        plots.main(["fig2", str(variants), "--out", str(out)])
        return {f.name: f.read_bytes() for f in out.iterdir()}

    first = draw(tmp_path / "a", "1700000000")
    second = draw(tmp_path / "b", "1800000000")  # three years later
    assert any(name.endswith(".pdf") for name in first)
    assert first == second


def test_the_codec_table_names_the_model_where_a_dataset_has_several(tmp_path):
    from flower_gd.tables import codec_table

    for seed in (0, 1):
        for model, acc in (("cnn", 0.8), ("resnet18", 0.6)):
            _saved_run(tmp_path, "gossip", "iid", seed, [0.5, acc], 40_000, "scores",
                       model=model)
            _saved_run(tmp_path, "gossip", "iid", seed, [0.5, acc - 0.1], 4_000, "scores",
                       model=model, codec="uint8")
    header, body = codec_table(load_runs(tmp_path), shared={"num-nodes": 2,
                                                            "num-server-rounds": 1})
    rows = {(r[1], r[3]): r[header.index("vs default (points, paired)")] for r in body}
    assert rows[("gossip [cnn]", "uint8")] == rows[("gossip [resnet18]", "uint8")] == \
        "-10.00 ± 0.00 (2)"
    assert len(body) == 4


def test_a_figure_never_averages_two_models_in_one_mark(tmp_path):
    """Two models of one dataset get a figure each (as the tables give each its rows)."""
    for seed in (0, 1):
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, 0.8], 40_000, "scores")
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, 0.6], 40_000, "scores",
                   model="resnet18")
    out = tmp_path / "figs"
    plots.main(["fig2", str(tmp_path), "--out", str(out)])
    assert sorted(f.name for f in out.glob("*.png")) == [
        "fig2_final_accuracy_digits_cnn.png", "fig2_final_accuracy_digits_resnet18.png"]


def test_the_pareto_front_keeps_only_points_nothing_beats():
    #          0: cheap, poor  1: beaten by 0   2: best  3: costlier, no better  4: tie on 2
    points = [(1.0, 0.50), (2.0, 0.40), (3.0, 0.80), (5.0, 0.80), (3.0, 0.70)]
    assert plots.pareto_front(points) == [0, 2]
    assert plots.pareto_front([(1.0, 0.5)]) == [0]
    assert plots.pareto_front([]) == []


def test_figures_show_each_tuned_method_at_its_setting_chosen_on_validation(tmp_path):
    for seed in (0, 1):
        for lr in (0.05, 0.02):  # the default lr is measured on the most partitions too
            _saved_run(tmp_path, "gossip", "iid", seed, [0.5, 0.6], 40_000, "scores", lr=lr)
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.6], 50_000, "scores")
    for summary_path in tmp_path.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["final-val"] = {"median": 0.7 if "lr0.02" in summary_path.parent.name else 0.5}
        summary_path.write_text(json.dumps(summary))
    main = plots.main_runs(load_runs(tmp_path))
    assert sorted((r.method, r.config["lr"]) for r in main) == [
        ("dlad", 0.05), ("dlad", 0.05), ("gossip", 0.02), ("gossip", 0.02)]


def test_mini_sweep_writes_aggregates_and_a_rerun_skips_finished_cells(tmp_path):
    cmd = [sys.executable, "-m", "flower_gd", "-m", "app.method=local,gossip",
           "app.num-nodes=2", "app.num-server-rounds=1", "app.local-epochs=1",
           "app.common-limit=60", "app.test-limit=40", f"app.output-dir={tmp_path}"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = load_runs(tmp_path)
    assert sorted(r.method for r in runs) == ["gossip", "local"]
    stamps = {r.path: (r.path / "summary.json").stat().st_mtime_ns for r in runs}
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skip (finished)") == 2
    again = {r.path: (r.path / "summary.json").stat().st_mtime_ns for r in load_runs(tmp_path)}
    assert again == stamps
    assert "gossip" in write_report(tmp_path, with_models=False)


def test_paper_payload_table_measures_what_flower_sends():
    from flower_gd.sizes import paper_payload_table

    header, body = paper_payload_table()
    mnist = dict(zip(header, body[0], strict=True))
    assert mnist["float32 data (bytes)"] == str(48_000 * 10 * 4)
    # the measured message is the float32 data plus Flower's object tree and the Fleet API
    # calls that deliver it (about 2 KiB in all), about half the published 3.46 "MiB"
    assert 1024 < int(mnist["Flower message (bytes)"]) - 48_000 * 10 * 4 < 3072


def test_the_report_names_runs_that_shared_a_local_phase():
    from pathlib import Path

    from flower_gd.report import local_phase_groups
    from flower_gd.tables import SavedRun

    def run(name, keys, reused, parts=1):
        phase = {str(p): {"key": k, "parts": parts, "reused": reused} for p, k in enumerate(keys)}
        return SavedRun(Path(name), {"local-phase": phase}, {}, [])

    runs = [run("local_s0", ["a", "b"], 0), run("gossip_s0", ["a", "b"], 1),
            run("dlad_s0", ["a", "b"], 1, parts=2),  # trained its discriminators itself
            run("gossip_s1", ["c", "d"], 0), run("fedavg_s0", [], 0)]
    assert local_phase_groups(runs) == [
        "- local_s0, gossip_s0, dlad_s0 (computed by: local_s0, dlad_s0)"]


def test_t_interval_is_students_over_seeds():
    from flower_gd.tables import format_interval, t_interval

    mean, half = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / 3 ** 0.5)
    assert t_interval([0.5])[1] is None
    assert format_interval([0.5]) == "0.5000 (1 seed)"
    assert format_interval([0.01, 0.03], scale=100, digits=2, signed=True) == \
        f"+2.00 ± {12.706 * 2 ** 0.5 / 2 ** 0.5:.2f} (2)"


def test_paired_differences_pair_by_seed_and_say_when_not_distinguishable(tmp_path):
    from flower_gd.tables import paired_table

    for seed, (gossip, fedavg) in enumerate([(0.60, 0.80), (0.62, 0.81), (0.64, 0.79)]):
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, gossip], 40_000, "scores")
        _saved_run(tmp_path, "fedavg", "iid", seed, [0.4, fedavg], 300_000, "weights")
        # niid1: gossip above on two seeds, below on one: the interval spans 0
        _saved_run(tmp_path, "gossip", "niid1", seed, [0.5, 0.5 + 0.02 * (seed != 1)],
                   40_000, "scores")
        _saved_run(tmp_path, "fedavg", "niid1", seed, [0.4, 0.51], 300_000, "weights")
    _saved_run(tmp_path, "fedavg", "niid1", 7, [0.4, 0.9], 300_000, "weights")  # no pair
    header, body = paired_table(load_runs(tmp_path), "gossip")
    assert header == ["dataset", "model", "method - gossip (points)", "iid", "niid1"]
    (fed,) = body
    # diffs 20, 19, 15 points: mean 18, sd 2.6458, t(2) = 4.303
    assert fed[3] == f"+18.00 ± {4.303 * 7 ** 0.5 / 3 ** 0.5:.2f} (3)"
    assert fed[4].endswith("(3) n.d.")  # seed 7 has no gossip run: three pairs, not four
    assert "‡" not in fed[3] + fed[4]  # every pair ran on this machine

    # one seed's fedavg run made on another CPU: its pair is marked, the other cell is not
    (moved,) = [d for d in tmp_path.iterdir() if d.name.startswith("fedavg_iid") and
                d.name.endswith("_s1")]
    summary = json.loads((moved / "summary.json").read_text())
    summary["machine"] = {**summary["machine"], "cpu-flags": "other"}
    (moved / "summary.json").write_text(json.dumps(summary))
    (fed,) = paired_table(load_runs(tmp_path), "gossip")[1]
    assert fed[3].endswith(" ‡") and "‡" not in fed[4]
    assert "‡: on some seed the two runs ran on different machines" in write_report(
        tmp_path, with_models=False)


def test_a_run_made_by_other_code_is_left_out_of_the_tables_or_marked(results):
    """A mean or a paired difference never mixes code versions by default; on request the
    other code's runs are tabulated, each cell holding one marked."""
    from flower_gd.provenance import CODE_VERSION_KEY

    (run,) = [d for d in results.iterdir() if d.name.startswith("gossip_iid") and
              d.name.endswith("_s0")]
    cfg = json.loads((run / "config.json").read_text())
    cfg[CODE_VERSION_KEY] = {**cfg[CODE_VERSION_KEY], "source": "0" * 32}
    (run / "config.json").write_text(json.dumps(cfg))
    header, body = accuracy_table(load_runs(results))
    gossip = next(r for r in body if r[2] == "gossip")
    assert gossip[3].endswith(" †") and not gossip[4].endswith(" †")
    text = write_report(results, with_models=False)
    assert f"- {run.name}: commit" in text and "left out of every table" in text
    assert " †" not in text.split("## Runs made by other code")[0]
    rows = list(csv.DictReader((results / "results.csv").open()))
    assert len(rows) == sum((d / "summary.json").is_file() for d in results.iterdir()) - 1
    marked = write_report(results, with_models=False, include_stale=True)
    assert " †" in marked.split("## Runs made by other code")[0]
    assert "marked †" in marked


def _set_val(root: Path, val: float) -> None:
    """Give every run under `root` without one a final median validation accuracy."""
    for summary_path in root.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        if "final-val" not in summary or summary["final-val"]["median"] != summary[
                "final-val"]["median"]:
            summary["final-val"] = {"median": val}
            summary_path.write_text(json.dumps(summary))


def test_selection_reads_validation_never_test_and_needs_every_cell(tmp_path):
    from flower_gd.select import main as select_main
    from flower_gd.select import overrides, select

    def add(val, test, partitions=("iid", "niid1"), **extra):
        for p in partitions:
            for seed in (0, 1):
                _saved_run(tmp_path, "gossip-adaptive", p, seed, [0.5, test], 40_000,
                           "scores", **extra)
        _set_val(tmp_path, val)

    add(0.60, 0.90)  # the defaults: best on test, worse on validation
    add(0.70, 0.50, **{"gossip-peers": 3})
    add(0.95, 0.95, partitions=("iid",), **{"round-epochs": 3})  # skipped niid1: no contest
    sel = select(load_runs(tmp_path))["gossip-adaptive"]
    assert sel["chosen"] == "gossip-adaptive gossip-peers=3"
    assert sel["test-of-chosen"].startswith("0.5000")
    skipped = next(c for c in sel["candidates"] if "round-epochs" in c["label"])
    assert not skipped["complete"]
    assert overrides({"gossip-adaptive": sel}, "gossip-adaptive") == \
        "app.gossip-peers=3"
    select_main([str(tmp_path)])
    text = (tmp_path / "selection.md").read_text()
    assert text.count("**chosen**") == 1 and "ran on different machines" not in text
    here = load_runs(tmp_path)[0].machine
    assert f"| {here}: 4 |" in text  # each candidate's CPU and its runs in the contest

    # a candidate made on another CPU: the contest says its candidates crossed machines
    for summary_path in tmp_path.glob("*gossip-peers3*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["machine"] = {**summary["machine"], "cpu-flags": "other"}
        summary_path.write_text(json.dumps(summary))
    sel = select(load_runs(tmp_path))["gossip-adaptive"]
    peers = next(c for c in sel["candidates"] if "gossip-peers" in c["label"])
    assert list(peers["machines"].values()) == [4] and peers["machines"] != next(
        c for c in sel["candidates"] if c["label"] == "gossip-adaptive")["machines"]
    select_main([str(tmp_path)])
    assert "ran on different machines" in (tmp_path / "selection.md").read_text()


def test_t_quantiles_match_students_t_beyond_the_table():
    from flower_gd.tables import t975

    # scipy.stats.t.ppf(0.975, df) for df = 21, 24, 31, 40, 60, 1000
    for df, t in ((21, 2.0796), (24, 2.0639), (31, 2.0395), (40, 2.0211), (60, 2.0003),
                  (1000, 1.9623)):
        assert t975(df) == pytest.approx(t, abs=6e-4)


def test_cells_never_mix_experiments_models_or_repeated_seeds(tmp_path):
    """A paired difference needs the same experiment on both sides; the bytes table keeps
    each model's own message size; a second run of one cell and seed is an error, not a
    mean."""
    from flower_gd.tables import paired_table

    for seed in (0, 1, 2):
        _saved_run(tmp_path / "a", "dlad", "iid", seed, [0.5, 0.8], 50_000, "scores")
        # paper gossip on another test set: same dataset, model and partition
        _saved_run(tmp_path / "a", "gossip", "iid", seed, [0.5, 0.7], 40_000, "scores",
                   **{"test-limit": 17})
        _saved_run(tmp_path / "a", "fedavg", "iid", seed, [0.5, 0.6], 300_000, "weights")
    hide = {"test-limit": 0, "num-nodes": 2, "num-server-rounds": 1}  # labels: method only
    header, body = paired_table(load_runs(tmp_path / "a"), "dlad", shared=hide)
    rows = {r[2]: r[3] for r in body}
    assert "gossip" not in rows and rows["fedavg"].startswith("-20.00")
    for seed in (0, 1):
        _saved_run(tmp_path / "b", "fedavg", "iid", seed, [0.5, 0.6], 300_000, "weights")
        _saved_run(tmp_path / "b", "fedavg", "iid", seed, [0.5, 0.6], 900_000, "weights",
                   model="mobilenet_v3_small")
    header, body = bytes_table(load_runs(tmp_path / "b"))
    assert {(r[1], r[5]) for r in body} == {("cnn", "300000"), ("mobilenet_v3_small", "900000")}
    _saved_run(tmp_path / "b", "fedavg", "iid", 0, [0.5, 0.9], 300_000, "weights",
               **{"round-timeout": 60.0})  # a key no label shows: the same cell and seed
    with pytest.raises(ValueError, match="repeats a cell and seed"):
        accuracy_table(load_runs(tmp_path / "b"), shared={"round-timeout": 0, **hide})
    with pytest.raises(ValueError, match="repeats a cell and seed"):
        paired_table(load_runs(tmp_path / "b"), "dlad", shared={"round-timeout": 0, **hide})


def test_seeds_added_for_the_chosen_setting_widen_the_tables_not_the_choice(tmp_path):
    """`make bench-cells SEEDS=3,4` runs only the chosen setting on new seeds: the contest
    stays on the seeds at least two candidates ran (the other candidates stay complete, the
    choice and its validation score do not move), while the comparison table averages
    every seed of the chosen setting."""
    from flower_gd.select import select, study_cells

    for seed in (0, 1, 2):
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.80], 50_000, "scores")
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.70], 50_000, "scores",
                   **{"distill-epochs": 20})
    _set_val(tmp_path, 0.60)
    for summary_path in tmp_path.glob("*distill-epochs*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["final-val"] = {"median": 0.65}  # 20 epochs wins on validation
        summary_path.write_text(json.dumps(summary))
    before = select(load_runs(tmp_path))["dlad"]
    for seed in (3, 4):  # the chosen setting alone, on two more seeds
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.90], 50_000, "scores",
                   **{"distill-epochs": 20})
    _set_val(tmp_path, 0.99)  # high enough to win, were the new seeds part of the contest
    after = select(load_runs(tmp_path))["dlad"]
    assert after["chosen"] == before["chosen"] == "dlad distill-epochs=20"
    assert after["on"] == before["on"] == ["iid/s0", "iid/s1", "iid/s2"]
    assert [c["val"] for c in after["candidates"]] == [c["val"] for c in before["candidates"]]
    assert all(c["complete"] for c in after["candidates"])
    assert after["test-of-chosen"] == before["test-of-chosen"]  # seeds 0-2 only
    assert len(after["runs"]) == 5
    text = write_report(tmp_path, with_models=False)
    chosen = text.split("## Each method at its setting chosen on validation")[1]
    assert "| digits | cnn | dlad | 0.7800 ± 0.1360 (5) |" in chosen  # 0.7 x 3, 0.9 x 2
    # no seed two candidates share: no contest (`select` then takes the most complete
    # candidate's cells)
    assert study_cells([{("iid", 0)}, {("iid", 1), ("iid", 2)}]) == set()


def test_uneven_candidates_still_give_a_choice(tmp_path):
    """Candidates on overlapping seeds (each cell held by a majority, no candidate on all) and
    a candidate that also ran a partition no other did: a choice, never a crash."""
    from flower_gd.select import select

    for lr, seeds in ((0.01, (0, 1)), (0.02, (1, 2)), (0.03, (0, 2))):
        for seed in seeds:
            _saved_run(tmp_path / "a", "dlad", "iid", seed, [0.5, 0.8], 50_000, "scores", lr=lr)
    _set_val(tmp_path / "a", 0.6)
    sel = select(load_runs(tmp_path / "a"))["dlad"]
    assert len(sel["on"]) == 2 and sum(c["complete"] for c in sel["candidates"]) >= 1
    for lr in (0.01, 0.02):
        for seed in (0, 1, 2):
            _saved_run(tmp_path / "b", "dlad", "iid", seed, [0.5, 0.8], 50_000, "scores", lr=lr)
    for seed in (0, 1, 2):  # lr 0.01 also on niid1, which no majority ran
        _saved_run(tmp_path / "b", "dlad", "niid1", seed, [0.5, 0.8], 50_000, "scores", lr=0.01)
    _set_val(tmp_path / "b", 0.6)
    sel = select(load_runs(tmp_path / "b"))["dlad"]
    # lr 0.02 skipped a partition another candidate ran: it cannot win
    assert len(sel["on"]) == 6 and sel["chosen"] == "dlad lr=0.01"
    assert [c["complete"] for c in sel["candidates"]
            if c["label"] == "dlad lr=0.02"] == [False]
    # two full candidates and three run on one cell only (a screen): the contest keeps
    # every seed two candidates ran, the screens are incomplete
    for lr in (0.03, 0.04, 0.06):
        _saved_run(tmp_path / "b", "dlad", "iid", 0, [0.5, 0.8], 50_000, "scores", lr=lr)
    for seed in (0, 1, 2):
        _saved_run(tmp_path / "b", "dlad", "niid1", seed, [0.5, 0.8], 50_000, "scores",
                   lr=0.02)
    _set_val(tmp_path / "b", 0.99)  # the screens: best on validation, on one cell
    sel = select(load_runs(tmp_path / "b"))["dlad"]
    assert len(sel["on"]) == 6 and sel["chosen"] in ("dlad lr=0.01", "dlad lr=0.02")


def test_the_report_compares_each_method_at_its_setting_chosen_on_validation(tmp_path):
    for seed in (0, 1, 2):
        for lr, test in ((0.05, 0.9), (0.02, 0.6)):  # 0.02 wins on validation (below)
            _saved_run(tmp_path, "gossip", "iid", seed, [0.5, test], 40_000, "scores", lr=lr)
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.5 + 0.01 * seed], 50_000, "scores")
        _saved_run(tmp_path, "gossip-adaptive", "iid", seed, [0.5, 0.7], 50_000, "scores")
        _set_val(tmp_path, 0.0)  # the runs just written: dlad's and gossip-adaptive's validation
        for summary_path in tmp_path.glob("gossip_*/summary.json"):
            summary = json.loads(summary_path.read_text())
            summary["final-val"] = {"median": 0.7 if "lr0.02" in summary_path.parent.name
                                    else 0.5}
            summary_path.write_text(json.dumps(summary))
    text = write_report(tmp_path, with_models=False)
    assert "- gossip: `gossip lr=0.02` (validation 0.7000" in text
    # a method with one setting here says so: it was not tuned in this directory
    assert "- dlad: `dlad` (the only setting that competed; validation" in text
    chosen = text.split("## Each method at its setting chosen on validation")[1]
    assert "| digits | cnn | gossip | 0.6000 ± 0.0000 (3) |" in chosen  # test of the chosen
    paired = text.split("## Paired differences against DLAD")[1]
    assert "| digits | cnn | gossip | +9.00 ± " in paired  # 0.6 - (0.5, 0.51, 0.52)
    against_ga = text.split("## Paired differences against gossip-adaptive")[1]
    assert "| digits | cnn | gossip | -10.00 ± 0.00 (3) |" in against_ga  # 0.6 - 0.7
    assert "| digits | cnn | dlad | -19.00 ± " in against_ga  # (0.5, 0.51, 0.52) - 0.7
    assert (tmp_path / "selection.md").is_file()


def test_a_run_on_leaked_labels_is_never_a_candidate(tmp_path):
    from flower_gd.select import select

    # the leak scores higher on validation; the honest run is the only candidate
    _saved_run(tmp_path, "gossip", "iid", 0, [0.5, 0.6], 40_000, "scores")
    _saved_run(tmp_path, "gossip", "iid", 0, [0.5, 0.9], 40_000, "scores",
               **{"label-source": "ground-truth"})
    for summary_path in tmp_path.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["final-val"] = {"median": summary["final"]["median"]}
        summary_path.write_text(json.dumps(summary))
    chosen = select(load_runs(tmp_path))["gossip"]
    assert [c["label"] for c in chosen["candidates"]] == [chosen["chosen"]] == ["gossip"]


def test_a_codec_an_attack_or_a_defence_is_never_the_choice(tmp_path):
    """Runs measured under a condition (a payload codec, attackers, a defence, faults)
    are reported, never chosen, even on every cell and best on validation."""
    from flower_gd.select import CONDITION_KEYS, select

    conditions = ({"codec": "hard4"}, {"codec": "topk", "codec-topk": 3},
                  {"byzantine-nodes": 3}, {"robust-mix": "clip"}, {"message-loss": 0.1},
                  {"pull-retries": 2}, {"pull-timeout": 30.0}, {"min-nodes": 3})
    for seed in (0, 1):
        for p in ("iid", "niid1"):
            _saved_run(tmp_path, "gossip-adaptive", p, seed, [0.5, 0.6], 40_000, "scores")
            _saved_run(tmp_path, "gossip-adaptive", p, seed, [0.5, 0.6], 40_000, "scores",
                       **{"gossip-peers": 3})
            for extra in conditions:
                _saved_run(tmp_path, "gossip-adaptive", p, seed, [0.5, 0.9], 40_000,
                           "scores", **extra)
    for summary_path in tmp_path.glob("*/summary.json"):
        summary = json.loads(summary_path.read_text())
        name = summary_path.parent.name
        # the conditions score highest on validation, then 3 peers, then the defaults
        summary["final-val"] = {"median": 0.7 if "gossip-peers" in name
                                else summary["final"]["median"]}
        summary_path.write_text(json.dumps(summary))
    runs = load_runs(tmp_path)
    assert len({r.label() for r in runs}) == 2 + len(conditions)  # every run landed apart
    sel = select(runs)["gossip-adaptive"]
    assert sel["chosen"] == "gossip-adaptive gossip-peers=3"
    labels = {c["label"] for c in sel["candidates"]}
    assert labels == {"gossip-adaptive", "gossip-adaptive gossip-peers=3"}
    # each condition alone, beside the defaults: still never a candidate
    base = set(min(runs, key=lambda r: len(r.settings)).settings)  # the test's own setup
    for extra in conditions:
        alone = [r for r in runs if set(r.settings) - base in (set(), set(extra))
                 and "gossip-peers" not in r.settings]
        assert len(alone) == 8, extra
        assert select(alone)["gossip-adaptive"]["chosen"] == "gossip-adaptive", extra
    assert {k for extra in conditions for k in extra} <= CONDITION_KEYS


def test_panels_share_one_legend_below_them():
    """Figs. 5-7 list every label once, in one legend outside the panels: a legend drawn
    inside a panel hid the Byzantine figure's points."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, layout="constrained")
    axes[0].plot([0, 1], [0, 1], label="gossip")
    axes[1].plot([0, 1], [1, 0], label="gossip")
    axes[1].plot([0, 1], [0.5, 0.5], label="dlad")
    plots._legend_below(fig, axes)
    try:
        assert [ax.get_legend() for ax in axes] == [None, None]
        assert len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["gossip", "dlad"]
    finally:
        plt.close(fig)


def test_the_assist_table_pairs_each_family_with_the_run_without_assist(tmp_path):
    from flower_gd.tables import assist_table

    # final accuracy by seed without the assistant 0.50, 0.60; with it 0.53, 0.65: +3, +5 points
    for assist, accs in (("none", (0.50, 0.60)), ("next-larger", (0.53, 0.65))):
        for seed, acc in enumerate(accs):
            _saved_run(tmp_path, "gossip-adaptive", "niid1", seed, [0.4, acc], 40_000, "scores",
                       model="cnn,mobilenet_v3_small", **{"gossip-assist": assist})
    _saved_run(tmp_path, "dlad", "niid1", 0, [0.4, 0.7], 40_000, "scores",
               model="cnn,mobilenet_v3_small")  # no assist variant: no row
    header, body = assist_table(load_runs(tmp_path))
    rows = {r[header.index("family")]: r for r in body}
    assert set(rows) == {"cnn", "mobilenet_v3_small", "whole fleet"}
    for row in rows.values():
        assert row[header.index("method")] == "gossip-adaptive num-server-rounds=1"
        assert row[header.index("assist")] == "next-larger"
        assert row[-1] == "+4.00 ± 12.71 (2) n.d."  # t(1) = 12.706 x sd 1.414 / sqrt 2
    assert "the teacher assistant's effect" in write_report(tmp_path, with_models=False)


def test_figures_leave_out_runs_made_by_other_code_unless_asked(results, tmp_path, capsys):
    from flower_gd.provenance import CODE_VERSION_KEY

    run = next(d for d in sorted(results.iterdir()) if (d / "config.json").is_file())
    cfg = json.loads((run / "config.json").read_text())
    cfg[CODE_VERSION_KEY] = {**cfg[CODE_VERSION_KEY], "source": "0" * 32}
    (run / "config.json").write_text(json.dumps(cfg))
    plots.main(["fig2", str(results), "--out", str(tmp_path / "a")])
    assert "left out 1 run(s) made by other code" in capsys.readouterr().out
    plots.main(["fig2", str(results), "--out", str(tmp_path / "b"), "--include-stale"])
    assert "left out" not in capsys.readouterr().out


def test_a_choice_is_made_within_one_experiment_never_across_datasets(tmp_path):
    """Runs of one method on two datasets (or split sizes) in one folder never compete: their
    (partition, seed) cells would collide and a data setting would be "chosen"."""
    from flower_gd.select import mixed_experiments, overrides, select

    for seed in (0, 1):
        _saved_run(tmp_path, "gossip-adaptive", "iid", seed, [0.5, 0.6], 40_000, "scores")
        _saved_run(tmp_path, "gossip-adaptive", "iid", seed, [0.5, 0.9], 40_000, "scores",
                   dataset="fashion-mnist", **{"gossip-peers": 3})
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.6], 40_000, "scores")
        _saved_run(tmp_path, "dlad", "iid", seed, [0.5, 0.7], 40_000, "scores",
                   **{"distill-epochs": 20})
    _set_val(tmp_path, 0.5)
    runs = load_runs(tmp_path)
    assert mixed_experiments(runs) == {"gossip-adaptive": {"dataset": ["digits",
                                                                       "fashion-mnist"]}}
    selection = select(runs)
    assert "gossip-adaptive" not in selection and "dlad" in selection  # dlad: one experiment
    with pytest.raises(SystemExit, match="own output-dir"):
        overrides(selection, "gossip-adaptive")
    text = write_report(tmp_path, with_models=False)
    assert "- gossip-adaptive: dataset = digits, fashion-mnist" in text
    assert "- gossip-adaptive: dataset" in (tmp_path / "selection.md").read_text()
    chosen = text.split("## Each method at its setting chosen on validation")[1]
    assert "- dlad:" in chosen.split("Test accuracy")[0]
    assert "gossip-adaptive" not in chosen.split("Test accuracy")[0]


def test_a_folder_whose_every_method_spans_experiments_chooses_nothing(tmp_path):
    """The small-sets study's shape: the same methods on digits and on Fashion-MNIST with
    other split sizes; nothing is chosen, the note says why, an earlier choice is removed.
    A key missing from an old run's config is its default, not a difference."""
    from flower_gd.select import SELECTION, mixed_experiments

    (tmp_path / SELECTION).write_text('{"local": {}}')  # an earlier report's choice
    for seed in (0, 1):
        _saved_run(tmp_path, "local", "iid", seed, [0.5, 0.6], 0, "scores")
        _saved_run(tmp_path, "local", "iid", seed, [0.5, 0.7], 0, "scores",
                   dataset="fashion-mnist", **{"common-limit": 2000, "num-nodes": 50})
        _saved_run(tmp_path, "gossip", "iid", seed, [0.5, 0.6], 40_000, "scores")
    _set_val(tmp_path, 0.5)
    for config_path in tmp_path.glob("gossip_*_s1/config.json"):  # an old run: no val-limit
        config = json.loads(config_path.read_text())
        del config["val-limit"]
        config_path.write_text(json.dumps(config))
    mixed = mixed_experiments(load_runs(tmp_path))
    assert mixed == {"local": {"dataset": ["digits", "fashion-mnist"],
                               "num-nodes": ["2", "50"], "common-limit": ["0", "2000"]}}
    text = write_report(tmp_path, with_models=False)
    assert "## Methods with no setting chosen" in text
    assert "- local: dataset = digits, fashion-mnist; num-nodes = 2, 50" in text
    assert "## Each method at its setting chosen on validation" not in text
    assert list(json.loads((tmp_path / SELECTION).read_text())) == ["gossip"]  # one setting


def test_a_report_with_nothing_chosen_removes_an_earlier_choice(results):
    from flower_gd.select import SELECTION

    (results / SELECTION).write_text('{"gossip": {}}')
    (results / "selection.md").write_text("### gossip")
    write_report(results, with_models=False)  # one setting per method, no validation scores
    assert not (results / SELECTION).exists() and not (results / "selection.md").exists()


def test_the_report_says_when_its_runs_come_from_several_machines():
    from pathlib import Path

    from flower_gd.report import machines_note
    from flower_gd.tables import SavedRun

    def run(machine):
        return SavedRun(Path("r"), {"method": "gossip", **({"machine": machine} if machine
                                                          else {})}, {}, [])
    one = {"cpu": "AMD EPYC", "cpu-flags": "73fecba4"}
    assert machines_note([run(one), run(one)]) == "Machine: AMD EPYC (flags 73fecba4) (2 runs)."
    mixed = machines_note([run(one), run({**one, "cpu-flags": "0000aaaa"}), run(None)])
    assert "These tables mix runs of several machines" in mixed
    assert "not recorded (1 runs)" in mixed
