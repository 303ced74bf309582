"""When a saved run counts as finished: same computation, wherever the folder now lives."""

import json

import pytest

from flower_gd.config import load_defaults
from flower_gd.results import SUMMARY, RunRecorder, is_finished


def _saved(tmp_path, config):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    (run / SUMMARY).write_text("{}")
    return run


def test_a_moved_results_folder_still_counts(tmp_path):
    config = {**load_defaults(), "output-dir": "/somewhere/else"}
    assert is_finished(_saved(tmp_path, config), {**config, "output-dir": str(tmp_path)})


def test_a_key_added_after_the_run_matches_its_default(tmp_path):
    defaults = load_defaults()
    old = {k: v for k, v in defaults.items() if k not in ("codec", "gossip-peers")}
    run = _saved(tmp_path, old)
    assert is_finished(run, defaults)
    with pytest.raises(FileExistsError, match=r"differs in \['codec'\]"):
        is_finished(run, {**defaults, "codec": "uint8"})


def test_an_unfinished_run_is_not_finished(tmp_path):
    assert not is_finished(tmp_path / "nothing-here", load_defaults())


def test_a_run_records_the_code_that_made_it(tmp_path):
    from flower_gd.results import CODE_VERSION_KEY, code_version

    version = code_version()
    assert set(version) == {"commit", "dirty", "flwr", "torch", "numpy"}
    assert len(version["commit"]) == 40 or version["commit"] == "unknown"
    assert version["flwr"].startswith("1.41")
    meter = type("Meter", (), {"entries": []})()
    rec = RunRecorder(tmp_path / "run", {"method": "gossip"}, meter, lambda p: "cnn")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved[CODE_VERSION_KEY] == version and saved["method"] == "gossip"
    assert rec.resumed is None
