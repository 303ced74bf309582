"""Run one experiment through the project's ServerApp/ClientApp on Flower's simulation engine."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from flower_gd.config import PROJECT_ROOT, RunConfig, load_defaults, merge_overrides
from flower_gd.methods import load_config
from flower_gd.results import SUMMARY, is_finished


def resolve_config(overrides: dict[str, Any]) -> RunConfig:
    """pyproject defaults + overrides, validated for the method; output-dir made absolute."""
    cfg = load_config(merge_overrides(load_defaults(), overrides))
    return replace(cfg, output_dir=str(Path(cfg.output_dir).expanduser().resolve()))


def preflight(cfg: RunConfig, num_nodes: int) -> None:
    """Fail before any simulation starts: missing dataset, impossible partition, bad model."""
    from flower_gd.federation import federated_data
    from flower_gd.models import build_model

    data = federated_data(cfg, num_nodes)
    for name in sorted(set(cfg.model.split(","))):
        build_model(name, data.dataset.input_shape[0], data.dataset.num_classes, cfg.pretrained)


def run_experiment(overrides: dict[str, Any], client_cpus: float = 1.0,
                   verbose: bool = False, reuse_stale: bool = False) -> dict[str, Any]:
    """Run (or skip, when finished) one experiment and return its summary.

    Parameters
    ----------
    overrides : dict
        Run-config keys (dashed) that differ from pyproject's `[tool.flwr.app.config]`.
    client_cpus : float
        CPUs per simulated node; 1 lets a 2-core machine run two nodes at once.
    reuse_stale : bool
        Skip a finished run made by other code instead of re-measuring it (the report
        marks such runs); by default it is set aside and re-measured.
    """
    # 1. resolve and validate the config
    cfg = resolve_config(overrides)
    from flower_gd.server_app import run_dir_for

    run_dir = run_dir_for(cfg)
    if is_finished(run_dir, cfg.to_mapping(), reuse_stale=reuse_stale):
        print(f"skip (finished): {run_dir}")
        return json.loads((run_dir / SUMMARY).read_text())
    # 2. data, partition and models must be possible before any worker starts
    preflight(cfg, cfg.num_nodes)
    print("resolved run config:\n" + json.dumps(cfg.to_mapping(), indent=2, sort_keys=True))
    # 3. run on the simulation engine
    _simulate(cfg, client_cpus, verbose)
    if not is_finished(run_dir):
        raise RuntimeError(f"the run ended without writing {run_dir / SUMMARY}; see the log "
                           "above for the node or ServerApp error")
    return json.loads((run_dir / SUMMARY).read_text())


def _simulate(cfg: RunConfig, client_cpus: float, verbose: bool) -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Nodes import `flower_gd` and `strategies` from the project root.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PROJECT_ROOT) not in paths:  # once, not once per run of a sweep
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *paths])
    from flower_gd.client_app import app as client_app
    from flower_gd.flower_internals import run_simulation
    from flower_gd.server_app import app as server_app

    run_simulation(server_app, client_app, cfg.to_mapping(), cfg.num_nodes, str(PROJECT_ROOT),
                   client_cpus, verbose)
