"""Which strategy runs for each `method`, and how it is started (the ServerApp's one switch)."""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord

from baselines.central import CentralTraining
from baselines.dlad import DLAD
from baselines.fedavg import RecordedFedAvg
from baselines.local import LocalTraining
from flower_gd.config import RunConfig
from flower_gd.federation import federated_data
from flwr.serverapp import Grid
from flower_gd.models import build_model
from flower_gd.node import RUN_DIR_KEY
from flower_gd.results import RunRecorder
from flower_gd.training import OptimConfig
from strategies.gossip import GossipDistillation
from strategies.gossip_adaptive import GossipAdaptive


def run_method(cfg: RunConfig, run_dir: str, grid: Grid,
               recorder: RunRecorder) -> dict[str, Any]:
    """Run `cfg.method` over the metered (and, with faults, lossy) Grid; returns extra
    summary fields."""
    optim = OptimConfig(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size)
    timeout = cfg.round_timeout
    relay = {"topology": cfg.topology, "seed": cfg.seed, "recorder": recorder,
             "pull_timeout": cfg.pull_timeout, "pull_retries": cfg.pull_retries,
             "min_nodes": cfg.min_nodes}
    if cfg.method == "gossip-adaptive":
        strategy = GossipAdaptive(run_dir, cfg.num_nodes, peers=cfg.gossip_peers,
                                  weights=cfg.gossip_weights, share=cfg.gossip_share, **relay)
        strategy.start(grid=grid, num_rounds=cfg.num_server_rounds, timeout=timeout)
        return {"failed-pulls": strategy.failed_pulls}
    if cfg.method in ("gossip", "local"):
        cls = GossipDistillation if cfg.method == "gossip" else LocalTraining
        strategy = cls(run_dir, cfg.num_nodes, label_leak=cfg.label_source == "ground-truth",
                       **relay)
        strategy.start(grid=grid, num_rounds=cfg.num_server_rounds, timeout=timeout)
        return {"failed-pulls": strategy.failed_pulls}
    data = federated_data(cfg, cfg.num_nodes)  # the server's copy: X_c and the test set
    if cfg.method == "dlad":
        DLAD(run_dir, cfg.num_nodes, data, cfg.global_model, optim, cfg.distill_epochs,
             cfg.temperature, cfg.seed, recorder, min_nodes=cfg.min_nodes).start(
                 grid=grid, timeout=timeout)
        return {}
    if cfg.method in ("central", "central-all"):
        CentralTraining(run_dir, cfg.num_nodes, data, cfg.global_model, optim, cfg.local_epochs,
                        cfg.seed, pooled_private=cfg.method == "central",
                        recorder=recorder).start(grid=grid, timeout=timeout)
        return {}
    if cfg.method == "fedavg":
        torch.manual_seed(cfg.seed)
        initial = build_model(cfg.global_model, data.dataset.input_shape[0],
                              data.dataset.num_classes)
        RecordedFedAvg(cfg.num_nodes, recorder, cfg.min_nodes).start(
            grid=grid, initial_arrays=ArrayRecord(initial.state_dict()),
            num_rounds=cfg.num_server_rounds, timeout=timeout,
            train_config=ConfigRecord({RUN_DIR_KEY: run_dir}),
            evaluate_config=ConfigRecord({RUN_DIR_KEY: run_dir}))
        return {}
    raise ValueError(f"unknown method {cfg.method!r}")
