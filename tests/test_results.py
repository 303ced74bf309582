"""When a saved run counts as finished: same computation, wherever the folder now lives."""

import json

import pytest

from flower_gd.config import load_defaults
from flower_gd.results import SUMMARY, RunRecorder, is_finished


def _saved(tmp_path, config, version=None, name="run"):
    """A finished run directory as a sweep leaves it, made by `version` (today's code)."""
    from flower_gd.provenance import CODE_VERSION_KEY, code_version

    run = tmp_path / name
    run.mkdir()
    saved = {**config,
             CODE_VERSION_KEY: code_version(config["method"]) if version is None else version}
    (run / "config.json").write_text(json.dumps(saved))
    (run / SUMMARY).write_text("{}")
    return run


def test_a_moved_results_folder_still_counts(tmp_path):
    config = {**load_defaults(), "output-dir": "/somewhere/else"}
    assert is_finished(_saved(tmp_path, config), {**config, "output-dir": str(tmp_path)})


def test_a_key_the_run_lacks_is_a_difference_not_a_default(tmp_path):
    defaults = load_defaults()  # method = gossip: it reads codec and label-source
    old = {k: v for k, v in defaults.items() if k not in ("codec", "label-source")}
    run = _saved(tmp_path, old)
    with pytest.raises(FileExistsError, match=r"differs in \['codec', 'label-source'\]"):
        is_finished(run, defaults)


def test_keys_only_other_methods_read_are_not_compared(tmp_path):
    """A key added for another method (the run predates it) or set for another method in a
    sweep cannot change what this method computed: its run still counts (as its run name,
    which leaves such keys out, already says)."""
    defaults = load_defaults()  # gossip reads neither gossip-peers nor distill-weight
    old = {k: v for k, v in defaults.items() if k != "gossip-peers"}
    run = _saved(tmp_path, old)
    assert is_finished(run, {**defaults, "distill-weight": 9.0})
    gossip_adaptive = {**defaults, "method": "gossip-adaptive"}
    run = _saved(tmp_path, {k: v for k, v in gossip_adaptive.items() if k != "gossip-peers"},
                 name="ga")
    with pytest.raises(FileExistsError, match=r"differs in \['gossip-peers'\]"):
        is_finished(run, gossip_adaptive)  # gossip-adaptive reads it


def test_a_run_made_by_other_code_is_set_aside_and_remeasured(tmp_path):
    from flower_gd.provenance import STALE_DIR, code_version

    config = load_defaults()
    other = {**code_version(config["method"]), "source": "0" * 32,
             "commit": "abcdef1234" + "0" * 30}
    run = _saved(tmp_path, config, version=other)
    assert not is_finished(run, config)  # the sweep runs the cell again
    assert not run.exists()
    (moved,) = (tmp_path / STALE_DIR).iterdir()  # nothing is lost: the old run is kept aside
    assert moved.name == "run-abcdef1234" and (moved / SUMMARY).is_file()


def test_a_stale_run_is_remeasured_even_when_its_config_differs(tmp_path):
    """Code comes first: an older run whose keys differ (older code named them otherwise)
    is set aside and re-measured, not an error that stops the sweep."""
    from flower_gd.provenance import STALE_DIR, code_version

    defaults = load_defaults()
    old = {k: v for k, v in defaults.items() if k != "codec"}
    now = code_version(defaults["method"])
    run = _saved(tmp_path, old, version={**now, "source": "1" * 32})
    assert not is_finished(run, defaults) and not run.exists()
    assert len(list((tmp_path / STALE_DIR).iterdir())) == 1
    # the same run kept on purpose (reuse-stale) must still match the config
    run = _saved(tmp_path, old, version={**now, "source": "1" * 32}, name="kept")
    with pytest.raises(FileExistsError, match=r"differs in \['codec'\]"):
        is_finished(run, defaults, reuse_stale=True)


def test_a_run_without_a_code_version_is_stale_and_reuse_stale_keeps_it(tmp_path):
    config = load_defaults()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))  # made before runs said their code
    (run / SUMMARY).write_text("{}")
    assert is_finished(run, config, reuse_stale=True) and run.is_dir()
    assert not is_finished(run, config) and not run.exists()


def test_other_package_versions_are_other_code(tmp_path):
    from flower_gd.provenance import code_version, made_by_this_code

    config = load_defaults()
    assert made_by_this_code(_saved(tmp_path, config))
    older_torch = {**code_version(config["method"]), "torch": "2.13.0"}
    assert not made_by_this_code(_saved(tmp_path, config, version=older_torch, name="b"))


def test_an_unfinished_run_is_not_finished(tmp_path):
    assert not is_finished(tmp_path / "nothing-here", load_defaults())


def test_a_run_records_the_code_that_made_it(tmp_path):
    from flower_gd.provenance import CODE_VERSION_KEY, code_version

    version = code_version("gossip")
    assert set(version) == {"commit", "dirty", "source", "scope-files", "unread-keys", "flwr",
                            "torch", "numpy", "torchvision", "scikit-learn"}
    assert version["scope-files"] == ["strategies/gossip.py", "strategies/peers.py",
                                       "strategies/relay.py"]
    assert "gossip-peers" in version["unread-keys"] and "codec" not in version["unread-keys"]
    assert len(version["commit"]) == 40 or version["commit"] == "unknown"
    assert version["flwr"].startswith("1.41")
    meter = type("Meter", (), {"entries": []})()
    rec = RunRecorder(tmp_path / "run", {"method": "gossip"}, meter, lambda p: "cnn")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved[CODE_VERSION_KEY] == version and saved["method"] == "gossip"
    assert rec.resumed is None


def test_the_summary_counts_collapsed_and_diverged_nodes_and_reads_validation(tmp_path):
    import csv

    meter = type("Meter", (), {"entries": [], "collect_late": lambda self: 0})()
    rec = RunRecorder(tmp_path / "run", {"method": "gossip"}, meter, lambda p: "cnn")
    for node in range(4):
        rec.add_node(100 + node, node)
    rec.record(0, 101, {"accuracy": 0.5, "diverged-steps": 3.0})  # refused steps in round 0
    for node, (acc, val, top) in enumerate([(0.8, 0.82, 0.2), (0.7, 0.71, 0.3),
                                            (0.1, 0.1, 0.97), (0.1, 0.11, 0.9)]):
        rec.record(1, 100 + node, {"accuracy": acc, "val-accuracy": val, "top-share": top})
    rec.end_round(0)
    rec.end_round(1)
    summary = rec.finalize()
    assert summary["collapsed-nodes"] == 2  # top-share >= 0.9: one class for the val set
    assert summary["diverged-nodes"] == 1
    assert summary["final-val"]["median"] == pytest.approx((0.71 + 0.11) / 2)
    assert summary["final"]["median"] == pytest.approx((0.7 + 0.1) / 2)
    with (tmp_path / "run" / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["diverged_steps"] for r in rows if r["round"] == "0"] == ["0", "3", "0", "0"]
    assert [r["top_share"] for r in rows if r["round"] == "1"][2] == "0.97"


def test_a_summary_names_the_machine_that_ran_it(tmp_path):
    meter = type("Meter", (), {"entries": [], "collect_late": lambda self: 0})()
    rec = RunRecorder(tmp_path / "run", {"method": "dlad"}, meter, lambda p: "cnn")
    summary = rec.finalize()
    assert summary["machine"]["cpu"] and summary["machine"]["cores"] >= 1
    assert summary["machine"]["python"].count(".") == 2
