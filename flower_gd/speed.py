"""Where a run's time goes: the harness against the nodes' own work and against plain PyTorch.

Usage: ``python -m flower_gd.speed [--dataset digits|fashion-mnist] [--out results/speed]``

Runs one cell per method (niid1, the demo's settings for each method) one after the other in
this process, as a Hydra sweep does, each in its own output directory (so each computes its
own local phase), and reports per cell:

- `wall-s`: seconds from calling the experiment to its return (the process's share);
- `node-busy-s`: seconds the nodes spent in their ClientApp, summed over every message
  (each node logs it to disk, `NodeStore.log_busy`; nothing is added to the messages);
- `ratio`: wall / (node busy / cores), 1.0 when the cores do nothing but node work (the
  server's own work, DLAD's distillation, FedAvg's averaging, counts as overhead here);
- `server-busy-s`: that server work (`RunRecorder.server_work`), which runs while the nodes
  wait, and `ratio-with-server`: wall / (node busy / cores + server busy), 1.0 when nothing
  but the method's own computation takes time;
- `to-first-round-s`: from the call until the ServerApp starts its run (Ray, workers, app
  loading), and `first-round-overhead-s`: the first round's wall (round 0, FedAvg's round 1)
  minus its node work spread on the cores (the workers' first messages: imports, data);
- for the first cell, whether Ray was started by it (`cold`).

Then the training loop: samples per second of `train_hard` against a plain PyTorch loop
(same model, arrays, batches, optimiser and epochs, one thread as a simulated node has) on
one node's private data. Results: `<out>/summary.json` and `<out>/results.md`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from flower_gd.config import RunConfig, load_defaults, merge_overrides
from flower_gd.experiment import run_experiment
from flower_gd.node import Node
from flower_gd.node_store import NodeStore
from flower_gd.provenance import code_version
from flower_gd.tables import markdown
from flower_gd.training import train_hard

CELLS: dict[str, dict[str, Any]] = {  # one cell per method: the demo's / bench's settings
    "local": {"method": "local"},
    "gossip": {"method": "gossip"},
    "gossip-adaptive": {"method": "gossip-adaptive", "gossip-peers": 2, "round-epochs": 2},
    "dlad": {"method": "dlad"},
    "fedavg": {"method": "fedavg", "num-server-rounds": 20, "round-epochs": 1},
}
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {},
    "fashion-mnist": {"dataset": "fashion-mnist", "common-limit": 6000, "test-limit": 5000},
}


def node_busy(run_dir: Path, first_round: int) -> dict[str, float]:
    """Seconds the nodes spent handling messages (in total, in the first round) and the
    largest peak resident memory of a worker process that handled one (MiB)."""
    total = first = 0.0
    peak = 0
    for node_dir in sorted((run_dir / "nodes").glob("node-*")):
        store = NodeStore(run_dir, int(node_dir.name.removeprefix("node-")))
        for server_round, _, seconds, peak_kib in store.busy():
            total += seconds
            first += seconds if server_round == str(first_round) else 0.0
            peak = max(peak, peak_kib)
    return {"total": total, "first": first, "peak-mib": peak / 1024}


def measure_cell(name: str, overrides: dict[str, Any], out: Path, cores: int) -> dict[str, Any]:
    """Run one cell and set its wall time beside its nodes' work."""
    called = time.time()
    summary = run_experiment({**overrides, "output-dir": str(out / name), "run-name": name})
    wall = time.time() - called
    run_dir = out / name / name
    with (run_dir / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    first_round = min(int(r["round"]) for r in rows)  # 0, or 1 for FedAvg (no local phase)
    first_wall = next(float(r["round_wall_s"]) for r in rows if int(r["round"]) == first_round)
    busy = node_busy(run_dir, first_round)
    return {
        "cell": name, "wall-s": round(wall, 2), "node-busy-s": round(busy["total"], 2),
        "ratio": round(wall / (busy["total"] / cores), 2) if busy["total"] else None,
        "server-busy-s": summary["server-busy-s"],
        "ratio-with-server": round(wall / (busy["total"] / cores + summary["server-busy-s"]), 2)
        if busy["total"] else None,
        "to-first-round-s": round(summary["started-at"] - called, 2),
        "first-round-overhead-s": round(first_wall - busy["first"] / cores, 2),
        "final-median": summary["final"]["median"], "rounds": summary["rounds"],
        "worker-peak-rss-mib": round(busy["peak-mib"], 1),
    }


# Scale in nodes: Fashion-MNIST iid, one round after the local phase, a smaller common and
# test set than the bench so that 100 nodes fit in minutes on two cores.
SCALE = {"dataset": "fashion-mnist", "partition-scheme": "iid", "common-limit": 2000,
         "test-limit": 1000, "num-server-rounds": 1}
SCALE_CELLS = {"gossip-adaptive": {"method": "gossip-adaptive"}, "dlad": {"method": "dlad"}}


def scale(out: Path, sizes: list[int], cores: int) -> list[dict[str, Any]]:
    """Wall per node-round and worker memory as the fleet grows (each run computes its own
    local phase; a node-round is one node's round 0 or round 1)."""
    rows = []
    for method, cell in SCALE_CELLS.items():
        for n in sizes:
            name = f"{method}-{n}"
            row = measure_cell(name, {**SCALE, **cell, "num-nodes": n}, out / "scale", cores)
            node_rounds = n * (row["rounds"] + 1)
            row.update({"method": method, "nodes": n,
                        "wall-per-node-round-s": round(row["wall-s"] / node_rounds, 3),
                        "busy-per-node-round-s": round(row["node-busy-s"] / node_rounds, 3)})
            rows.append(row)
            print(json.dumps(row))
    return rows


def _plain_loop(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int,
                lr: float, momentum: float, weight_decay: float, batch_size: int,
                min_epoch_steps: int, seed: int) -> int:
    """The machine's limit: a textbook loop taking the same steps as `train_hard` (passes
    over the data until `min_epoch_steps` batches per epoch), nothing else; returns the
    number of samples it trained on."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    model.train()
    samples = 0
    for _ in range(epochs):
        steps = 0
        while steps < min_epoch_steps or steps == 0:
            order = torch.from_numpy(rng.permutation(len(xt)))
            for start in range(0, len(xt), batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2 and len(xt) >= 2:  # as train_hard: no BatchNorm step on one
                    continue
                sgd.zero_grad()
                F.cross_entropy(model(xt[idx]), yt[idx]).backward()
                sgd.step()
                steps += 1
                samples += len(idx)
    return samples


def training_loop(overrides: dict[str, Any], epochs: int, repeats: int = 3) -> dict[str, Any]:
    """Samples per second of `train_hard` and of the plain loop, best of `repeats`."""
    torch.set_num_threads(1)  # as a simulated node (1 CPU)
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), {**overrides,
                                                                   "partition-scheme": "iid"}))
    node = Node(cfg, 0, cfg.num_nodes, "/nonexistent")
    x, y = node.data.private(0)
    o = node.optim
    best: dict[str, float] = {}
    samples = 0
    for _ in range(repeats):
        for name in ("train_hard", "plain"):
            model = node.new_model()
            start = time.perf_counter()
            if name == "train_hard":
                train_hard(model, x, y, epochs, o, seed=0)
            else:
                samples = _plain_loop(model, x, y, epochs, o.lr, o.momentum, o.weight_decay,
                                      o.batch_size, o.min_epoch_steps, 0)
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, float("inf")), seconds)
    return {"samples": samples, "train-hard-samples-per-s": round(samples / best["train_hard"]),
            "plain-samples-per-s": round(samples / best["plain"]),
            "slowdown": round(best["train_hard"] / best["plain"], 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--out", type=Path, default=Path("results/speed"))
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--scale", nargs="+", type=int, metavar="NODES",
                        help="instead: gossip-adaptive and DLAD on Fashion-MNIST with these "
                             "fleet sizes (e.g. 10 50 100), results in <out>/scale/")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.scale:
        rows = scale(args.out, args.scale, cores)
        (args.out / "scale").mkdir(parents=True, exist_ok=True)
        (args.out / "scale" / "summary.json").write_text(json.dumps(
            {"settings": SCALE, "cores": cores, "rows": rows, "code-version": code_version()},
            indent=1))
        header = ["method", "nodes", "wall (s)", "wall per node-round (s)",
                  "node busy per node-round (s)", "wall / (busy / cores)",
                  "worker peak RSS (MiB)"]
        text = markdown(header, [[r["method"], str(r["nodes"]), str(r["wall-s"]),
                                  str(r["wall-per-node-round-s"]),
                                  str(r["busy-per-node-round-s"]), str(r["ratio"]),
                                  str(r["worker-peak-rss-mib"])] for r in rows])
        (args.out / "scale" / "results.md").write_text(text + "\n")
        print(text)
        return
    out = args.out / args.dataset
    base = {**DATASETS[args.dataset], "partition-scheme": "niid1"}
    rows = []
    for i, name in enumerate(args.cells):
        row = measure_cell(name, {**base, **CELLS[name]}, out / "runs", cores)
        row["cold"] = i == 0  # the first run of the process starts Ray and its workers
        rows.append(row)
        print(json.dumps(row))
    cfg = RunConfig.from_mapping(merge_overrides(load_defaults(), base))
    loop = training_loop(base, cfg.local_epochs)
    report = {"dataset": args.dataset, "cores": cores, "cells": rows, "training-loop": loop,
              "code-version": code_version()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    header = ["cell", "wall (s)", "node busy (s)", "wall / (busy / cores)", "server busy (s)",
              "wall / (busy / cores + server)", "to first round (s)",
              "first-round overhead (s)", "first run (Ray starts)"]
    body = [[r["cell"], str(r["wall-s"]), str(r["node-busy-s"]), str(r["ratio"]),
             str(r["server-busy-s"]), str(r["ratio-with-server"]), str(r["to-first-round-s"]),
             str(r["first-round-overhead-s"]),
             "yes" if r["cold"] else ""] for r in rows]
    text = (markdown(header, body)
            + f"\n\nTraining loop ({loop['samples']} samples, one thread): train_hard "
            f"{loop['train-hard-samples-per-s']} samples/s, plain PyTorch loop "
            f"{loop['plain-samples-per-s']} samples/s, {loop['slowdown']}x.\n")
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
