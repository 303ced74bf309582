"""Run-config defaults, overrides and validation errors."""

import pytest

from flower_gd import methods
from flower_gd.config import ConfigError, load_defaults, merge_overrides


def _cfg(**overrides):
    return methods.load_config(merge_overrides(load_defaults(), overrides))


def test_pyproject_defaults_validate():
    cfg = _cfg()
    assert cfg.method == "gossip" and cfg.dataset == "digits" and cfg.num_nodes == 10


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\) \['partiton-scheme'\]"):
        merge_overrides(load_defaults(), {"partiton-scheme": "iid"})


@pytest.mark.parametrize("key, value, match", [
    ("partition-scheme", "niid9", "choose one of"),
    ("dataset", "imagenet", "choose one of"),
    ("model", "cnn,vgg", "model='vgg'"),
    ("num-nodes", 1, "must be >= 2"),
    ("lr", "fast", "must be a number"),
    ("local-epochs", 1.5, "whole number"),
    ("private-fraction", 1.5, "in \\[1e-06, 0.999\\]"),
    ("topology", "star", "choose one of"),
    ("method", "gossip-magic", "method='gossip-magic' is not valid"),
    ("batch-size", 1, "training skips one-sample batches .* use batch-size=2 or more"),
    ("batch-size", 0, "batch-size=0 must be >= 2"),
])
def test_bad_values_fail_before_any_work(key, value, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**{key: value})


def test_ground_truth_label_source_warns_of_a_label_leak():
    with pytest.warns(UserWarning, match="LABEL LEAK"):
        cfg = _cfg(**{"label-source": "ground-truth"})
    assert methods.run_name(cfg) == "gossip_digits_iid_cnn_label-source=ground-truth_s0"


def test_models_are_assigned_round_robin_and_run_names_are_stable():
    cfg = _cfg(model="resnet18,mobilenet_v3_small", **{"partition-scheme": "niid1"})
    assert [cfg.model_for(i) for i in range(4)] == ["resnet18", "mobilenet_v3_small"] * 2
    assert methods.run_name(cfg) == "gossip_digits_niid1_resnet18+mobilenet_v3_small_s0"


def test_a_run_is_labelled_by_exactly_the_keys_that_differ_from_the_defaults():
    defaults = load_defaults()
    run = {**defaults, "method": "gossip-adaptive", "gossip-peers": 3, "common-limit": 600,
           "output-dir": "/elsewhere", "seed": 3}
    # where it lives and what its name spells already (method, seed) are not settings
    assert methods.settings(run) == {"common-limit": 600, "gossip-peers": 3}
    # a key only other methods read never labels a run
    assert methods.settings({**defaults, "method": "dlad", "gossip-peers": 3}) == {}


def test_round_epochs_zero_is_each_methods_own_default():
    """gossip-adaptive's default is what validation chose (2 epochs per round); every
    other method keeps the papers' one epoch per round."""
    assert _cfg(method="gossip-adaptive").round_epochs == 2
    assert _cfg(method="gossip").round_epochs == 1
    assert _cfg(method="gossip", **{"round-epochs": 3}).round_epochs == 3
    # a run saved with the resolved value is labelled as a default run...
    run = {**load_defaults(), "method": "gossip-adaptive", "round-epochs": 2}
    assert methods.settings(run) == {}
    # ...and one epoch per round, gossip's default, is a setting for gossip-adaptive
    assert methods.settings({**run, "round-epochs": 1}) == {"round-epochs": 1}
    assert methods.settings({**run, "method": "gossip", "round-epochs": 1}) == {}


def test_changing_a_default_keeps_every_label_true():
    run = {**load_defaults(), "method": "gossip-adaptive", "gossip-peers": 3}
    moved = {**load_defaults(), "gossip-peers": 3}  # pyproject's default moves to 3
    assert methods.settings(run, moved) == {}  # the run now runs the default
    assert methods.settings({**run, "gossip-peers": 1}, moved) == {"gossip-peers": 1}
    # a saved run from before a key existed ran that key's default
    old = {k: v for k, v in run.items() if k != "gossip-share"}
    assert methods.settings(old) == {"gossip-peers": 3}
    # and a renamed key is read under its new name
    renamed = {**{k: v for k, v in run.items() if k != "gossip-bookkeeping"},
               "gossip-weights": "accumulate"}
    assert methods.settings(renamed) == {"gossip-bookkeeping": "accumulate", "gossip-peers": 3}


def test_a_key_the_method_ignores_warns():
    with pytest.warns(UserWarning, match=r"method=dlad ignores \['gossip-peers'\]"):
        _cfg(method="dlad", **{"gossip-peers": 3})


def test_a_methods_own_option_needs_no_harness_field(monkeypatch):
    """A new method's keys live in pyproject and the method's `reads` (read with
    `cfg.option`): config.py, part of every run's code, is not edited, so adding the method
    keeps every saved run of the others."""
    from flower_gd import methods
    from flower_gd.config import RunConfig

    mapping = {**load_defaults(), "my-option": 3}
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\) \['my-option'\]: "
                                          "neither a harness key nor an option"):
        methods.load_config(mapping)
    monkeypatch.setattr(methods, "OPTION_KEYS", methods.OPTION_KEYS | {"my-option"})
    cfg = methods.load_config(mapping)  # declared by some method: accepted
    assert cfg.option("my-option") == 3 and cfg.to_mapping()["my-option"] == 3
    assert RunConfig.from_mapping(cfg.to_mapping()) == cfg
    with pytest.raises(ConfigError, match="has no option 'other'"):
        cfg.option("other")
