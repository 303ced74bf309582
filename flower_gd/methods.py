"""The method registry: every method by name, and what follows from it (config checks, names).

Adding a method: write one file with its strategy, its node steps and a `METHOD` entry
(`flower_gd.method.Method`), then list that entry in `REGISTRY` below. The ServerApp, the
ClientApp, config validation, run names, tables and figures all read this registry; no
other module compares method names. The registry is part of no run's code
(`flower_gd.provenance`): a new entry keeps every saved run of the other methods.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from baselines import central, dlad, ds_fl, fedavg, fedmd, local
from flower_gd.config import (
    HOUSEKEEPING_KEYS,
    NAME_KEYS,
    ConfigError,
    RunConfig,
    format_setting,
    load_defaults,
    method_defaults,
    off_default,
    upgrade,
)
from flower_gd.method import Method
from strategies import dist_distill, gossip, gossip_adaptive

# One entry per method, in the order of every table and legend.
REGISTRY: dict[str, Method] = {m.name: m for m in (
    local.METHOD,
    gossip.METHOD,
    gossip_adaptive.METHOD,
    dist_distill.METHOD,
    dlad.METHOD,
    fedmd.METHOD,
    ds_fl.METHOD,
    fedavg.METHOD,
    central.METHOD,
    central.CENTRAL_ALL,
)}
# Keys only the methods that list them in `reads` honour; every other key is read by all.
OPTION_KEYS = frozenset().union(*(m.reads for m in REGISTRY.values()))


def get(name: str) -> Method:
    """The registered method called `name`.

    Raises
    ------
    ConfigError
        When no method has that name; the message lists the names.
    """
    if name not in REGISTRY:
        raise ConfigError(f"method={name!r} is not valid; choose one of {list(REGISTRY)}")
    return REGISTRY[name]


def unread_keys(name: str) -> frozenset[str]:
    """The option keys method `name` does not read (only other methods do): they change
    nothing it computes, are not in its run names and are not compared with its saved runs."""
    return OPTION_KEYS - get(name).reads


def order(name: str) -> int:
    """A method's place in tables and legends (unknown names last)."""
    return list(REGISTRY).index(name) if name in REGISTRY else len(REGISTRY)


def message_types() -> list[str]:
    """Every message type some method's nodes answer (the ClientApp routes exactly these)."""
    return sorted({t for m in REGISTRY.values() for t in m.steps})


def load_config(mapping: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (dashed keys) as the method it names will run it.

    Warns about keys set off their defaults that this method never reads.

    Raises
    ------
    ConfigError
        On a missing, unknown or invalid key or method, before any work starts.
    """
    cfg = RunConfig.from_mapping(mapping)
    undeclared = sorted(k for k, _ in cfg.options if k not in OPTION_KEYS)
    if undeclared:
        raise ConfigError(f"unknown run-config key(s) {undeclared}: neither a harness key nor "
                          f"an option some method declares in its `reads`; known: "
                          f"{sorted(RunConfig.field_keys() | OPTION_KEYS)}")
    method = get(cfg.method)
    defaults = method_defaults(load_defaults(), cfg.method)
    ignored = sorted(set(off_default(cfg.to_mapping(), defaults, OPTION_KEYS)) - method.reads)
    if ignored:
        warnings.warn(f"method={cfg.method} ignores {ignored}: only "
                      f"{_readers(ignored)} read them", stacklevel=2)
    if "gossip-peers" in method.reads and cfg.gossip_peers >= cfg.num_nodes:
        raise ConfigError(f"gossip-peers={cfg.gossip_peers} needs at least "
                          f"{cfg.gossip_peers + 1} nodes (num-nodes={cfg.num_nodes}); set "
                          f"gossip-peers={max(cfg.num_nodes - 1, 1)} or add nodes")
    if ("gossip-peers" in method.reads and cfg.topology == "ring" and cfg.gossip_peers > 2):
        raise ConfigError(f"gossip-peers={cfg.gossip_peers} with topology=ring: a node on a "
                          "ring has two neighbours, so it would pull only 2; set "
                          "gossip-peers=2 or topology=complete")
    if method.check is not None:
        method.check(cfg)
    return cfg


def _readers(keys: Iterable[str]) -> list[str]:
    return [m.name for m in REGISTRY.values() if m.reads & set(keys)]


def settings(config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
    """What a run computed differently from the defaults: the keys its method reads (every
    common key, and its own options) whose value differs from `defaults` (pyproject's when
    None), leaving out the keys its name already spells and where things live.

    A saved config is read under today's key names; a key it lacks counts as its default.
    """
    method = str(config.get("method"))
    config = method_defaults(upgrade(config), method)  # a config may hold round-epochs = 0
    defaults = method_defaults(load_defaults() if defaults is None else defaults, method)
    reads = REGISTRY[config["method"]].reads if config.get("method") in REGISTRY else set()
    keys = set(defaults) - set(NAME_KEYS) - set(HOUSEKEEPING_KEYS) - (OPTION_KEYS - reads)
    return off_default(config, defaults, keys)


def run_name(cfg: RunConfig) -> str:
    """A stable, date-free run directory name, so a rerun finds (and skips) a finished run:
    method, dataset, partition, model, every setting off the defaults, seed."""
    if cfg.run_name:
        return cfg.run_name
    scheme = cfg.partition_scheme
    if scheme == "dirichlet":
        scheme = f"dirichlet{cfg.dirichlet_alpha:g}"
    parts = [cfg.method, cfg.dataset, scheme, cfg.model.replace(",", "+")]
    parts += [format_setting(k, v) for k, v in settings(cfg.to_mapping()).items()]
    return "_".join([*parts, f"s{cfg.seed}"])
