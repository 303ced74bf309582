"""The shared local phase: computed once per content address, reused bit for bit, and missed
whenever anything it depends on changes."""

import pytest
import torch

from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.local_phase import CACHE_DIR
from flower_gd.node import Node
from strategies import gossip, gossip_adaptive

SMALL = {"num-nodes": 3, "local-epochs": 2, "disc-epochs": 1, "common-limit": 120,
         "test-limit": 60, "partition-scheme": "niid1"}


def _node(run_dir, pid=0, **overrides):
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {**SMALL, **overrides}))
    return Node(cfg, pid, cfg.num_nodes, str(run_dir))


def _model_bytes(node):
    state = torch.load(node.store.snapshot(0).model_path, weights_only=True)
    return {k: v.numpy().tobytes() for k, v in state.items()}


def test_methods_of_one_seed_start_from_bit_identical_local_models(tmp_path):
    sweep, elsewhere = tmp_path / "sweep", tmp_path / "other"
    first = _node(sweep / "gossip_run")
    m1 = gossip.local_phase(first)
    second = _node(sweep / "gossip-adaptive_run")
    m2 = gossip_adaptive.local_phase(second)
    cold = _node(elsewhere / "gossip-adaptive_run")  # another sweep: computes everything
    m3 = gossip_adaptive.local_phase(cold)
    assert (m1["local-phase-reused"], m2["local-phase-reused"], m3["local-phase-reused"]) == (
        0, 1, 0)  # the second reused gossip's classifier and trained its discriminator
    assert m1["local-phase-key"] == m2["local-phase-key"] == m3["local-phase-key"]
    assert _model_bytes(first) == _model_bytes(second) == _model_bytes(cold)
    assert m1["train-loss"] == m2["train-loss"] == m3["train-loss"]
    # the reused discriminator output is the one computing it gives
    third = _node(sweep / "dlad_run")
    confidence, loss = third.fit_discriminator()
    cold_confidence, cold_loss = cold.fit_discriminator()  # cold's own entry, now cached
    assert third.local_phase["discriminator"][1] and confidence.tobytes() == (
        cold_confidence.tobytes())
    assert (sweep / CACHE_DIR).is_dir() and loss == cold_loss == m3["disc-loss"]


@pytest.mark.parametrize("key,value", [
    ("seed", 1), ("local-epochs", 3), ("lr", 0.01), ("momentum", 0.5), ("weight-decay", 0.0),
    ("batch-size", 20), ("partition-scheme", "iid"), ("private-fraction", 0.3),
    ("model", "mobilenet_v3_small"),
])
def test_a_determining_key_changes_the_classifier_address(tmp_path, key, value):
    base, changed = _node(tmp_path), _node(tmp_path, **{key: value})
    assert base.classifier_key() != changed.classifier_key()
    assert base.discriminator_key() != changed.discriminator_key() or key == "local-epochs"


@pytest.mark.parametrize("key,value", [("disc-epochs", 2), ("common-limit", 100)])
def test_what_only_the_discriminator_reads_changes_only_its_address(tmp_path, key, value):
    base, changed = _node(tmp_path), _node(tmp_path, **{key: value})
    assert base.classifier_key() == changed.classifier_key()
    assert base.discriminator_key() != changed.discriminator_key()


@pytest.mark.parametrize("key,value", [
    ("method", "dlad"), ("num-server-rounds", 9), ("temperature", 3.0), ("gossip-peers", 2),
    ("codec", "uint8"), ("round-epochs", 2), ("distill-epochs", 1), ("test-limit", 30),
])
def test_what_the_local_phase_does_not_read_keeps_both_addresses(tmp_path, key, value):
    base, changed = _node(tmp_path), _node(tmp_path, **{key: value})
    assert base.classifier_key() == changed.classifier_key()
    assert base.discriminator_key() == changed.discriminator_key()


def test_another_partition_is_another_entry(tmp_path):
    assert _node(tmp_path, 0).classifier_key() != _node(tmp_path, 1).classifier_key()


def test_the_address_is_the_data_not_the_key_that_chose_it(tmp_path):
    """Node 0 of niid1 holds the same samples with 3 nodes as with 4: the
    same local phase, so the same entry; node 1's share changes, so its entry does."""
    three, four = _node(tmp_path, 0), _node(tmp_path, 0, **{"num-nodes": 4})
    assert (three.data.private(0)[0] == four.data.private(0)[0]).all()
    assert three.classifier_key() == four.classifier_key()
