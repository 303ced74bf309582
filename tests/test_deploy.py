"""The deployment engine: real flower-superlink / flower-supernode processes on loopback."""

import json
from pathlib import Path

import pytest

from flower_gd.deploy import _alive, deploy
from flower_gd.results import SUMMARY

TINY = "local-epochs=1 common-limit=60 test-limit=40 round-timeout=180.0 pull-timeout=60.0"


def _summary(report: dict) -> dict:
    return json.loads((Path(report["run-dir"]) / SUMMARY).read_text())


@pytest.mark.long_running
def test_gossip_runs_over_tls_with_authenticated_supernodes_and_refuses_an_intruder(tmp_path):
    """One deployment checks it all (each message is a new ClientApp process on a SuperNode,
    about 5 s each, so every run counts): gossip over TLS between a SuperLink and three
    registered SuperNodes, state kept on the nodes' side, an unregistered SuperNode refused,
    every process gone at the end. The insecure path runs in the test below."""
    report = deploy(tmp_path / "dep", nodes=3, rounds=1, tls=True, auth=True, intruder=True,
                    extra=TINY)
    summary = _summary(report)
    assert report["flwr-run-exit"] == 0 and summary["rounds"] == 1
    assert summary["faults"]["alive-per-round"]["1"] == [0, 1, 2]
    assert summary["bytes"]["p2p"] > 0  # the round's pulls went through the relay
    assert summary["bytes"]["by-tag"]["scores"] > 0 and summary["bytes"]["by-tag"]["weights"] == 0
    # each SuperNode kept its state on its own side (node-config state-dir), not the server's
    for p in range(3):
        assert list((tmp_path / "dep" / "state" / f"supernode-{p}").rglob("model.pt"))
    superlink_log = (tmp_path / "dep" / "logs" / "superlink.log").read_text()
    assert "Uvicorn running on https://" in superlink_log  # TLS, not plain HTTP
    assert superlink_log.count("Activated node_id") == 3  # the registered three
    # the intruder presented a key nobody registered: refused, and it gave up
    assert report["intruder-exit"] != 0
    assert "ApiError:2004" in superlink_log and "Failed to activate SuperNode" in \
        report["intruder-log"]
    # every process it started is gone: SuperLink, SuperNodes, SuperExecs, app processes
    assert len(report["pids"]) >= 7 and not any(_alive(p) for p in report["pids"])


@pytest.mark.long_running
def test_killing_a_supernode_mid_run_ends_the_run_with_the_others(tmp_path):
    # a pull of the dead node fails after pull-timeout: shorter than the others' default
    report = deploy(tmp_path / "dep", nodes=3, rounds=2, kill_node=2, kill_after_round=1,
                    extra=TINY.replace("pull-timeout=60.0", "pull-timeout=30.0"))
    summary = _summary(report)
    assert report["killed-after-round"] == 1 and report["flwr-run-exit"] == 0
    assert summary["rounds"] == 2
    alive = summary["faults"]["alive-per-round"]
    assert alive["1"] == [0, 1, 2] and alive["2"] == [0, 1]
    assert summary["faults"]["lost-nodes"] == [2]
    assert not any(_alive(p) for p in report["pids"])


@pytest.mark.parametrize("argv, match", [
    (["--intruder"], "--intruder needs --auth"),
    (["--kill-node", "5"], "--kill-node must be a partition"),
])
def test_the_command_refuses_impossible_requests(argv, match, capsys):
    from flower_gd.deploy import main

    with pytest.raises(SystemExit):
        main(argv)
    assert match in capsys.readouterr().err
