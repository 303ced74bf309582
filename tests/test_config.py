"""Run-config defaults, overrides and validation errors."""

import pytest

from flower_gd.config import ConfigError, RunConfig, load_defaults, merge_overrides


def _cfg(**overrides):
    return RunConfig.from_mapping(merge_overrides(load_defaults(), overrides))


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
])
def test_bad_values_fail_before_any_work(key, value, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**{key: value})


def test_ground_truth_label_source_warns_of_a_label_leak():
    with pytest.warns(UserWarning, match="LABEL LEAK"):
        cfg = _cfg(**{"label-source": "ground-truth"})
    assert cfg.default_run_name().startswith("gossip-gt_")


def test_models_are_assigned_round_robin_and_run_names_are_stable():
    cfg = _cfg(model="resnet18,mobilenet_v3_small", **{"partition-scheme": "niid1"})
    assert [cfg.model_for(i) for i in range(4)] == ["resnet18", "mobilenet_v3_small"] * 2
    assert cfg.default_run_name() == "gossip_digits_niid1_resnet18+mobilenet_v3_small_s0"
