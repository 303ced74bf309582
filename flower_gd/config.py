"""Run-config keys, their defaults (read from pyproject.toml) and their validation.

This module knows every key but no method: which methods exist, what each one reads and
the checks only one method needs live in the method registry (`flower_gd.methods`), which
builds on this one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from flower_gd.byzantine import ATTACKS
from flower_gd.payload_codecs import CODECS, PROBABILITY_CODECS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = PROJECT_ROOT / "pyproject.toml"

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cinic10")
PARTITION_SCHEMES = ("iid", "niid1", "niid2", "niid3", "niid4", "dirichlet")
MODELS = ("cnn", "cnn-wide", "resnet18", "densenet121", "mobilenet_v3_small")
TOPOLOGIES = ("complete", "ring")
PEER_ASSISTS = ("none", "next-larger")
LABEL_SOURCES = ("mixed", "ground-truth")
INFERENCE_OUTPUTS = ("probs", "logits")
GOSSIP_BOOKKEEPING = ("push-sum", "accumulate")
GOSSIP_SHARES = ("belief", "reinfer")
GOSSIP_WEIGHTINGS = ("ratio", "dlad")
GOSSIP_STUDENTS = ("local", "fresh")
ROBUST_MIXES = ("none", "clip")

# Keys a run's directory name spells out in its fixed part (method_dataset_partition_model_s<seed>).
NAME_KEYS = ("method", "dataset", "partition-scheme", "dirichlet-alpha", "model", "seed")
# Where data and results live and how long to wait for replies, not what a run computes:
# never part of a run's name, and a finished run is reused whatever their values.
HOUSEKEEPING_KEYS = ("output-dir", "run-name", "data-dir", "download", "round-timeout")
# Groups of keys that tables vary one at a time (a table compares runs equal in all else).
CODEC_KEYS = ("codec", "codec-topk")
ATTACK_KEYS = ("byzantine-nodes", "byzantine-attack")
FAULT_KEYS = ("drop-nodes", "message-loss", "slow-nodes", "slow-delay")
# Keys renamed since runs were saved: old name -> new name (saved configs are read upgraded).
RENAMED_KEYS = {"gossip-weights": "gossip-bookkeeping"}
# `round-epochs = 0` (pyproject's default) stands for each method's own number of epochs per
# round: 1 (the papers' one epoch per round), but 2 for gossip-adaptive, the setting chosen on
# validation over all five Table I partitions (results/bench/selection.md).
ROUND_EPOCHS_OF = {"gossip-adaptive": 2}


def method_defaults(defaults: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The defaults as `method` runs with them (`round-epochs = 0` resolved)."""
    out = dict(defaults)
    if out.get("round-epochs") == 0:
        out["round-epochs"] = ROUND_EPOCHS_OF.get(method, 1)
    return out


class ConfigError(ValueError):
    """A run config that cannot run; the message names the key and the fix."""


def load_defaults(pyproject: Path = PYPROJECT) -> dict[str, Any]:
    """Return `[tool.flwr.app.config]` from pyproject.toml, the one source of defaults."""
    if not pyproject.is_file():
        raise ConfigError(
            f"{pyproject} not found: flower-gd reads its run-config defaults from the "
            "project's pyproject.toml; install the project in editable mode "
            "(`pip install -e .`, as `make demo` does)."
        )
    with pyproject.open("rb") as fh:
        return dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])


def merge_overrides(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply overrides to defaults, refusing keys the app does not know."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown run-config key(s) {unknown}; known keys: {sorted(defaults)} "
            "(keys use dashes, e.g. partition-scheme)"
        )
    merged = dict(defaults)
    merged.update(overrides)
    return merged


def _choice(cfg: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(cfg[key])
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(allowed)}")
    return value


def _number(cfg: Mapping[str, Any], key: str, low: float, high: float | None = None,
            integer: bool = False) -> Any:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number")
    if integer and int(value) != value:
        raise ConfigError(f"{key}={value!r} must be a whole number")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{key}={value!r} must be {bound}")
    return int(value) if integer else float(value)


def _batch_size(cfg: Mapping[str, Any]) -> int:
    """At least 2: training skips one-sample batches (a BatchNorm layer cannot normalise one
    sample), so with batch-size 1 no step would ever be taken."""
    if cfg["batch-size"] == 1:
        raise ConfigError("batch-size=1 must be >= 2: training skips one-sample batches (a "
                          "BatchNorm layer cannot normalise one sample), so no step would be "
                          "taken; use batch-size=2 or more")
    return _number(cfg, "batch-size", 2, integer=True)


@dataclass(frozen=True)
class RunConfig:
    """A validated run config; field names mirror the dashed run-config keys."""

    method: str
    dataset: str
    data_dir: str
    download: bool
    seed: int
    num_nodes: int
    partition_scheme: str
    dirichlet_alpha: float
    private_fraction: float
    val_fraction: float
    val_limit: int
    common_limit: int
    test_limit: int
    model: str
    pretrained: bool
    local_epochs: int
    num_server_rounds: int
    round_epochs: int
    temperature: float
    distill_epochs: int
    disc_epochs: int
    batch_size: int
    min_epoch_steps: int
    grad_clip: float
    lr: float
    momentum: float
    weight_decay: float
    topology: str
    label_source: str
    inference_output: str
    codec: str
    codec_topk: int
    gossip_peers: int
    gossip_assist: str
    gossip_bookkeeping: str
    gossip_share: str
    gossip_weighting: str
    gossip_student: str
    public_per_round: int
    digest_epochs: int
    revisit_epochs: int
    era_temperature: float
    distill_weight: float
    output_dir: str
    run_name: str
    round_timeout: float
    drop_nodes: str
    message_loss: float
    slow_nodes: str
    slow_delay: float
    pull_timeout: float
    pull_retries: int
    min_nodes: int
    byzantine_nodes: int
    byzantine_attack: str
    robust_mix: str
    clip_radius: float
    # keys of pyproject's run config that are no field here: a method's own options, declared
    # in its `reads` and validated by its `check` (flower_gd/methods.py refuses any that no
    # method declares); read with `option`. So a new method's keys need no edit of this file,
    # which is part of every run's code (flower_gd/provenance.py).
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> RunConfig:
        """Validate a flat run config (dashed keys) and build a RunConfig.

        Raises
        ------
        ConfigError
            On a missing or unknown key or an invalid value, before any work starts.
        """
        expected = cls.field_keys()
        missing = sorted(expected - set(cfg))
        if missing:
            raise ConfigError(f"run config lacks key(s) {missing}")
        options = tuple(sorted((k, cfg[k]) for k in set(cfg) - expected))
        models = [m.strip() for m in str(cfg["model"]).replace("+", ",").split(",")]
        for m in models:
            if m not in MODELS:
                raise ConfigError(f"model={m!r} is not valid; choose from {list(MODELS)}")
        out = cls(
            method=str(cfg["method"]),  # the method registry knows which exist
            dataset=_choice(cfg, "dataset", DATASETS),
            data_dir=str(cfg["data-dir"]),
            download=bool(cfg["download"]),
            seed=_number(cfg, "seed", 0, integer=True),
            num_nodes=_number(cfg, "num-nodes", 2, integer=True),
            partition_scheme=_choice(cfg, "partition-scheme", PARTITION_SCHEMES),
            dirichlet_alpha=_number(cfg, "dirichlet-alpha", 1e-6),
            private_fraction=_number(cfg, "private-fraction", 1e-6, 0.999),
            val_fraction=_number(cfg, "val-fraction", 0.0, 0.5),
            val_limit=_number(cfg, "val-limit", 0, integer=True),
            common_limit=_number(cfg, "common-limit", 0, integer=True),
            test_limit=_number(cfg, "test-limit", 0, integer=True),
            model=",".join(models),
            pretrained=bool(cfg["pretrained"]),
            local_epochs=_number(cfg, "local-epochs", 1, integer=True),
            num_server_rounds=_number(cfg, "num-server-rounds", 0, integer=True),
            round_epochs=_number(method_defaults(cfg, str(cfg["method"])), "round-epochs", 1,
                                 integer=True),
            temperature=_number(cfg, "temperature", 1e-3),
            distill_epochs=_number(cfg, "distill-epochs", 1, integer=True),
            disc_epochs=_number(cfg, "disc-epochs", 1, integer=True),
            batch_size=_batch_size(cfg),
            min_epoch_steps=_number(cfg, "min-epoch-steps", 1, integer=True),
            grad_clip=_number(cfg, "grad-clip", 0.0),
            lr=_number(cfg, "lr", 0.0),
            momentum=_number(cfg, "momentum", 0.0, 1.0),
            weight_decay=_number(cfg, "weight-decay", 0.0),
            topology=_choice(cfg, "topology", TOPOLOGIES),
            label_source=_choice(cfg, "label-source", LABEL_SOURCES),
            inference_output=_choice(cfg, "inference-output", INFERENCE_OUTPUTS),
            codec=_choice(cfg, "codec", CODECS),
            codec_topk=_number(cfg, "codec-topk", 1, integer=True),
            gossip_peers=_number(cfg, "gossip-peers", 1, integer=True),
            gossip_assist=_choice(cfg, "gossip-assist", PEER_ASSISTS),
            gossip_bookkeeping=_choice(cfg, "gossip-bookkeeping", GOSSIP_BOOKKEEPING),
            gossip_share=_choice(cfg, "gossip-share", GOSSIP_SHARES),
            gossip_weighting=_choice(cfg, "gossip-weighting", GOSSIP_WEIGHTINGS),
            gossip_student=_choice(cfg, "gossip-student", GOSSIP_STUDENTS),
            public_per_round=_number(cfg, "public-per-round", 0, integer=True),
            digest_epochs=_number(cfg, "digest-epochs", 1, integer=True),
            revisit_epochs=_number(cfg, "revisit-epochs", 0, integer=True),
            era_temperature=_number(cfg, "era-temperature", 1e-3),
            distill_weight=_number(cfg, "distill-weight", 0.0),
            output_dir=str(cfg["output-dir"]),
            run_name=str(cfg["run-name"]),
            round_timeout=_number(cfg, "round-timeout", 1.0),
            drop_nodes=str(cfg["drop-nodes"]).strip(),
            message_loss=_number(cfg, "message-loss", 0.0, 0.99),
            slow_nodes=str(cfg["slow-nodes"]).strip(),
            slow_delay=_number(cfg, "slow-delay", 0.0),
            pull_timeout=_number(cfg, "pull-timeout", 0.1),
            pull_retries=_number(cfg, "pull-retries", 0, integer=True),
            min_nodes=_number(cfg, "min-nodes", 1, integer=True),
            byzantine_nodes=_number(cfg, "byzantine-nodes", 0, integer=True),
            byzantine_attack=_choice(cfg, "byzantine-attack", ATTACKS),
            robust_mix=_choice(cfg, "robust-mix", ROBUST_MIXES),
            clip_radius=_number(cfg, "clip-radius", 1e-6, 2.0),
            options=options,
        )
        # parse now: a malformed drop-nodes / slow-nodes fails before any work starts
        _ = (out.dropouts, out.slow_partitions)
        if out.min_nodes > out.num_nodes:
            raise ConfigError(f"min-nodes={out.min_nodes} exceeds num-nodes={out.num_nodes}")
        if out.byzantine_nodes >= out.num_nodes:
            raise ConfigError(f"byzantine-nodes={out.byzantine_nodes} leaves no honest node "
                              f"(num-nodes={out.num_nodes}); use fewer than num-nodes")
        if out.codec in PROBABILITY_CODECS and out.inference_output == "logits":
            raise ConfigError(f"codec={out.codec!r} quantizes probabilities and cannot carry "
                              "logits: set inference-output=probs, or codec=float32/float16")
        if out.lr == 0.0:
            warnings.warn("lr=0 means no model ever changes: every round repeats the local phase",
                          stacklevel=2)
        if out.label_source == "ground-truth":
            warnings.warn(
                "label-source=ground-truth is a LABEL LEAK: nodes train on the true labels of "
                "the common data, as the public reference code did. Use it only to see where "
                "the published gossip numbers come from.",
                stacklevel=2,
            )
        return out

    @property
    def dropouts(self) -> dict[int, int]:
        """`drop-nodes` parsed: partition id -> first round in which it no longer answers."""
        out: dict[int, int] = {}
        for item in filter(None, (x.strip() for x in self.drop_nodes.split(","))):
            node, sep, rnd = item.partition("@")
            if not sep or not node.strip().isdigit() or not rnd.strip().isdigit():
                raise ConfigError(f"drop-nodes item {item!r} is not PARTITION@ROUND; write "
                                  "e.g. drop-nodes=\"3@2,5@4\" (partition 3 dies at round 2)")
            out[int(node)] = int(rnd)
        self._check_partitions("drop-nodes", out)
        return out

    @property
    def slow_partitions(self) -> set[int]:
        """`slow-nodes` parsed: partition ids that answer pulls `slow-delay` seconds late."""
        items = [x.strip() for x in self.slow_nodes.split(",") if x.strip()]
        bad = [x for x in items if not x.isdigit()]
        if bad:
            raise ConfigError(f"slow-nodes holds {bad}: write partition ids, e.g. "
                              "slow-nodes=\"1,4\"")
        out = {int(x) for x in items}
        self._check_partitions("slow-nodes", out)
        return out

    def _check_partitions(self, key: str, partitions: Iterable[int]) -> None:
        wrong = sorted(p for p in partitions if p >= self.num_nodes)
        if wrong:
            raise ConfigError(f"{key} names partition(s) {wrong}, but partitions are 0.."
                              f"{self.num_nodes - 1} (num-nodes={self.num_nodes})")

    def model_for(self, partition_id: int) -> str:
        """Model family of a node: `model` may list families, assigned round-robin."""
        models = self.model.split(",")
        return models[partition_id % len(models)]

    @property
    def global_model(self) -> str:
        """Family of a server-side global model (DLAD, FedAvg, central): the first listed."""
        return self.model.split(",")[0]

    @classmethod
    def field_keys(cls) -> set[str]:
        """The dashed keys the harness itself defines (every field but `options`)."""
        return {f.replace("_", "-") for f in cls.__dataclass_fields__ if f != "options"}

    def option(self, key: str) -> Any:
        """A method's own option (a pyproject key that is no field of RunConfig)."""
        found = dict(self.options)
        if key not in found:
            raise ConfigError(f"run config has no option {key!r}: add it to pyproject.toml's "
                              "[tool.flwr.app.config] and to the method's `reads`")
        return found[key]

    def to_mapping(self) -> dict[str, Any]:
        """Back to the flat dashed form (what Flower's run config carries)."""
        out = {k.replace("_", "-"): getattr(self, k) for k in self.__dataclass_fields__
               if k != "options"}
        return {**out, **dict(self.options)}



def upgrade(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved run's config under today's key names (see RENAMED_KEYS)."""
    return {RENAMED_KEYS.get(k, k): v for k, v in saved.items()}


def off_default(config: Mapping[str, Any], defaults: Mapping[str, Any],
                keys: Iterable[str]) -> dict[str, Any]:
    """The `keys` whose value in `config` differs from `defaults`, in sorted order.

    A key `config` lacks (a run saved before the key existed) counts as its default.
    """
    return {k: config[k] for k in sorted(keys)
            if k in config and k in defaults and config[k] != defaults[k]}


def format_setting(key: str, value: Any) -> str:
    """`key=value` as it appears in run names and table labels (no commas or spaces)."""
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{key}={value}".replace(",", "-").replace(" ", "").replace('"', "")
