"""Faults: lost messages at the transport, dead and slow nodes, and every method going on."""

import csv
import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from test_metering import FakeGrid, _payload_message

from flower_gd.config import ConfigError, RunConfig, load_defaults, merge_overrides
from flower_gd.experiment import run_experiment
from flower_gd.faults import FaultyGrid, unavailable_reply
from flower_gd.metering import MeteredGrid
from flower_gd.node import Node


def _cfg(**overrides):
    return RunConfig.from_mapping(merge_overrides(load_defaults(), overrides))


# ------------------------------------------------------------------ the pieces, by hand
@pytest.mark.usefixtures("task_identity")
def test_lost_messages_come_back_as_errors_and_were_still_metered():
    meter = MeteredGrid(FakeGrid())
    faulty = FaultyGrid(meter, loss=0.5, seed=3)
    faulty.set_round(2)
    messages = [_payload_message(10, dst=7) for _ in range(40)]
    replies = list(faulty.send_and_receive(messages, timeout=5))
    assert len(replies) == 40  # one answer per message: a reply or an error
    lost = [r for r in replies if r.has_error()]
    assert {r.error.code for r in lost} == {ErrorCode.MESSAGE_UNAVAILABLE}
    assert len(lost) == len(faulty.lost) and 5 < len(lost) < 35
    down_lost = sum(1 for x in faulty.lost if x.direction == "down")
    # every instruction left the ServerApp (metered), lost or not; only delivered ones got
    # a reply, which the node sent (metered) even when it was lost on the way back
    downs = [e for e in meter.entries if e.direction == "down" and e.kind == "wire"]
    ups = [e for e in meter.entries if e.direction == "up" and e.kind == "wire"]
    assert len(downs) == 40 and len(ups) == 40 - down_lost
    assert all(x.round == 2 for x in faulty.lost) and meter.round == 2


@pytest.mark.usefixtures("task_identity")
def test_no_loss_passes_every_message_through_unchanged():
    faulty = FaultyGrid(MeteredGrid(FakeGrid()), loss=0.0, seed=0)
    replies = list(faulty.send_and_receive([_payload_message(5) for _ in range(20)], timeout=5))
    assert not any(r.has_error() for r in replies) and not faulty.lost


@pytest.mark.usefixtures("task_identity")
def test_a_dropped_node_answers_with_node_unavailable_from_its_round_on():
    cfg = _cfg(**{"drop-nodes": "3@2"})

    def msg(server_round):
        return Message(RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                       dst_node_id=9, message_type="train.gossip")

    def node(partition, server_round):
        return Node(cfg, partition, cfg.num_nodes, "/unused", server_round)

    assert unavailable_reply(msg(1), node(3, 1)) is None
    assert unavailable_reply(msg(2), node(2, 2)) is None  # another node
    reply = unavailable_reply(msg(2), node(3, 2))
    assert reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE
    assert "node 3 is down since round 2" in reply.error.reason


@pytest.mark.parametrize("overrides, match", [
    ({"drop-nodes": "3"}, "not PARTITION@ROUND"),
    ({"drop-nodes": "12@1"}, r"names partition\(s\) \[12\]"),
    ({"slow-nodes": "a,1"}, "write partition ids"),
    ({"message-loss": 1.5}, "message-loss=1.5 must be in"),
    ({"min-nodes": 11}, "min-nodes=11 exceeds num-nodes=10"),
    ({"byzantine-nodes": 10}, "leaves no honest node"),
    ({"byzantine-attack": "sneaky"}, "byzantine-attack='sneaky' is not valid"),
])
def test_impossible_fault_settings_are_refused_with_the_fix(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**overrides)


# ------------------------------------------------------------------ whole runs, simulated
TINY = {"num-nodes": 4, "num-server-rounds": 2, "local-epochs": 1, "common-limit": 120,
        "test-limit": 60, "disc-epochs": 1, "distill-epochs": 1}


def _run(tmp_path, **overrides):
    summary = run_experiment({**TINY, "output-dir": str(tmp_path), **overrides})
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    return summary, rows, run_dir


@pytest.mark.parametrize("method", ["gossip", "gossip-adaptive"])
def test_gossip_goes_on_when_a_node_dies_and_messages_are_lost(tmp_path, method):
    summary, rows, _ = _run(tmp_path, method=method, **{"drop-nodes": "1@1",
                                                        "message-loss": 0.1})
    assert summary["rounds"] == 2
    dead = [r for r in rows if r["node"] == "1" and int(r["round"]) >= 1]
    assert len(dead) == 2 and all(r["alive"] == "0" and r["accuracy"] == "" for r in dead)
    assert 1 not in summary["faults"]["alive-per-round"]["2"]
    # a live node is recorded dead in a round only when messages to or from it were lost
    assert all(r["alive"] == "1" or int(r["lost_messages"]) > 0
               for r in rows if r["node"] != "1")
    assert sum(int(r["lost_messages"]) for r in rows) == summary["faults"]["lost-messages"]
    assert sum(int(r["failed_pulls"]) for r in rows) == summary["failed-pulls"]
    assert np.isfinite(summary["final"]["median"])


def test_a_gossip_run_stops_when_fewer_than_min_nodes_take_their_step(tmp_path):
    # two of four nodes die at round 1: two steps answered, min-nodes=3 wants three
    with pytest.raises(RuntimeError, match=r"round 1: the gossip step: only 2 node\(s\) "
                       r"answered, fewer than min-nodes=3 \(failed: partition 1, partition 2\)"):
        _run(tmp_path, method="gossip", **{"drop-nodes": "1@1,2@1", "min-nodes": 3})


def test_dlad_aggregates_the_nodes_that_answered(tmp_path):
    summary, rows, _ = _run(tmp_path, method="dlad", **{"drop-nodes": "2@0"})
    uploads = [r for r in rows if r["round"] == "0"]
    assert [r["node"] for r in uploads] == ["0", "1", "3"]  # node 2 never answered
    assert summary["final"]["median"] > 0


def test_fedavg_goes_on_under_flowers_minimum_node_rules(tmp_path):
    summary, rows, _ = _run(tmp_path, method="fedavg", **{"drop-nodes": "3@2",
                                                          "min-nodes": 3})
    assert summary["rounds"] == 2
    by_round = {r: {x["node"] for x in rows if x["round"] == str(r) and x["alive"] == "1"}
                for r in (1, 2)}
    assert by_round == {1: {"0", "1", "2", "3"}, 2: {"0", "1", "2"}}


def test_fedavg_stops_when_fewer_than_min_nodes_answer(tmp_path):
    # Flower's FedAvg itself: with no valid reply there is no model; the run still ends. No
    # node ever answered, so none is known by its partition: no row, no round, no accuracy
    summary, rows, _ = _run(tmp_path, method="fedavg", **{"drop-nodes": "0@1,1@1,2@1,3@1"})
    assert rows == [] and summary["rounds"] == 0
    assert np.isnan(summary["final"]["median"]) and summary["faults"]["alive-per-round"] == {}


def test_a_slow_peer_is_a_failed_pull_retried_on_another(tmp_path):
    summary, rows, run_dir = _run(tmp_path, method="gossip", **{
        "slow-nodes": "0", "slow-delay": 6.0, "pull-timeout": 2.0, "num-server-rounds": 2,
        "pull-retries": 2})
    assert sum(int(r["failed_pulls"]) for r in rows) == summary["failed-pulls"] > 0
    slow_id = next(r["node_id"] for r in rows if r["node"] == "0")
    relayed = [m for m in csv.DictReader((run_dir / "messages.csv").open())
               if m["message_type"] == "train.gossip" and m["kind"] == "p2p"
               and m["direction"] == "down"]
    # the slow node's answers always came too late; every node still got a payload from
    # another peer (4 nodes, complete topology, 2 retries), in both rounds
    assert slow_id not in {m["peer_id"] for m in relayed}
    assert len(relayed) == 2 * 4
    # its answers were sent all the same: those that arrive while the run goes on (round 1's,
    # during round 2) are metered, though never relayed
    messages = list(csv.DictReader((run_dir / "messages.csv").open()))
    asked = [m for m in messages if m["message_type"] == "query.inference"
             and m["direction"] == "down" and m["node_id"] == slow_id]
    answered = [m for m in messages if m["message_type"] == "query.inference"
                and m["direction"] == "up" and m["node_id"] == slow_id]
    assert asked and 1 <= len(answered) <= len(asked)
    assert json.loads((run_dir / "config.json").read_text())["slow-nodes"] == "0"


@pytest.mark.usefixtures("task_identity")
def test_which_messages_are_lost_follows_the_seed_and_partitions_not_node_ids_or_arrival():
    """Every message draws twice (there, back) in partition order: other node ids, another
    send order and replies arriving in another order lose the same partitions' messages."""
    class Reversed(FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):
            return list(self.pull_messages(self.push_messages(list(messages))))[::-1]

    def lost(node_ids, order, seed=5):
        faulty = FaultyGrid(Reversed(), loss=0.3, seed=seed)
        faulty.partition_of = {n: p for p, n in enumerate(node_ids)}
        messages = [Message(RecordDict(), dst_node_id=node_ids[p], message_type="train.gossip")
                    for p in order]
        list(faulty.send_and_receive(messages, timeout=5))
        return sorted((faulty.partition_of[x.node_id], x.direction) for x in faulty.lost)

    ids_a, ids_b = [11 + 3 * p for p in range(12)], [900 - 7 * p for p in range(12)]
    first = lost(ids_a, range(12))
    assert first and {d for _, d in first} == {"down", "up"}
    assert lost(ids_b, reversed(range(12))) == first
    assert lost(ids_a, range(12), seed=6) != first
