"""Run directories: resolved config, per-round per-node CSV, message log and summary JSON.

A run's directory is finished when `summary.json` exists; rows are appended round by round,
so an interrupted run keeps what it measured. Strategies that can resume (the gossip methods)
write `checkpoint.json` after every completed round; a rerun of a killed run restores the
recorder from it (rows of the unfinished round are dropped) and the strategy goes on.
"""

from __future__ import annotations

import contextlib
import csv
import json
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flower_gd.metering import TAGS, MeteredGrid, MeterEntry
from flower_gd.provenance import (
    CODE_VERSION_KEY,
    code_version,
    config_differs,
    machine,
    made_by_this_code,
    run_scope,
    set_aside,
    still_this_code,
)

ROUND_COLUMNS = [
    "round", "node", "node_id", "model", "accuracy", "loss", "val_accuracy", "val_loss",
    "top_share", "diverged_steps", "train_loss", "label_accuracy",
    "bytes_up", "bytes_down", "p2p_bytes_up", "p2p_bytes_down", "scores_bytes",
    "weights_bytes", "data_bytes", "control_bytes", "cum_bytes_up", "cum_bytes_down",
    "cum_p2p_bytes",
    "node_wall_s", "round_wall_s", "alive", "failed_pulls", "lost_messages",
    "payload_rejected", "byzantine", "common_samples",
]
MESSAGE_COLUMNS = ["round", "direction", "node_id", "message_type", "tag", "nbytes", "kind",
                   "peer_id"]
# a node whose most frequent answer covers this share of the validation set has collapsed
# onto one class (a healthy 10-class model answers its top class for 10-30% of samples)
COLLAPSE_SHARE = 0.9
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.json"


def _unread(config: dict[str, Any]) -> frozenset[str]:
    """The keys only other methods than the config's read (not compared with a saved run)."""
    from flower_gd.methods import unread_keys  # the registry imports every method

    return unread_keys(str(config["method"]))


def is_finished(run_dir: Path, config: dict[str, Any] | None = None,
                reuse_stale: bool = False) -> bool:
    """A finished run has its summary; a rerun of a sweep skips it.

    With `config`, a finished run counts only if it ran that exact config (a run directory
    that holds another config raises: a changed sweep never silently reuses stale cells)
    and was made by this code (`made_by_this_code`). A run made by other code is set aside
    (`set_aside`) and not finished, so the sweep re-measures it; with `reuse_stale` it
    counts, and the report marks it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).is_file():
        return False
    if config is None:
        return True
    # which code made it comes first: a run by other code is re-measured whatever its
    # config was (that code may have named or meant its keys otherwise)
    if not reuse_stale and not made_by_this_code(run_dir):
        moved = set_aside(run_dir)
        print(f"re-measure: {run_dir} was made by other code; moved to {moved}")
        return False
    differ = config_differs(run_dir, config, _unread(config))
    if differ:
        raise FileExistsError(
            f"{run_dir} holds a finished run with another config (differs in {differ}); "
            "set another output-dir or run-name, or delete that directory to rerun")
    return True


@dataclass(frozen=True)
class ResumePoint:
    """Where a killed run goes on: its last completed round and the strategy's state."""

    round: int
    state: dict[str, Any]


class RunRecorder:
    """Collects per-node metrics per round and writes the run directory.

    Parameters
    ----------
    run_dir : Path
        The run's directory (created).
    config : dict
        The resolved run config, written as config.json.
    meter : MeteredGrid
        The meter whose entries give every byte count.
    model_for : Callable[[int], str]
        Model family of a node, by partition id.
    faults : object | None
        A FaultyGrid whose `lost` list gives the lost messages.
    byzantine : set[int]
        Partitions that attack; the summary's `final` is over the others.
    resume : bool
        Restore from `checkpoint.json` when the directory holds one (a killed run).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], meter: MeteredGrid,
                 model_for: Callable[[int], str], faults: Any = None,
                 byzantine: set[int] | None = None, resume: bool = True) -> None:
        self.model_for = model_for
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.meter = meter
        self.faults = faults
        self.byzantine = set(byzantine or ())
        self.config = dict(config)
        self.nodes: dict[int, dict[str, Any]] = {}  # node_id -> {"node": pid, "model": name}
        self.partition_of_id: dict[int, int] = {}  # every node id seen, resumed runs' too
        self.metrics: dict[int, dict[int, dict[str, float]]] = defaultdict(dict)
        self.alive: dict[int, set[int]] = defaultdict(set)  # round -> node ids that answered
        self._cum: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # up, down, p2p
        self._round_start = time.perf_counter()
        self._t0 = time.perf_counter()
        self._started_at = time.time()  # when the ServerApp began this run (unix seconds)
        self._elapsed_before = 0.0  # wall seconds of the run before a resume
        self.server_busy_s = 0.0  # the ServerApp's own computation (server_work)
        self._written_entries = 0
        self._written_lost = 0
        self._lost_before = 0  # lost messages of the run before a resume
        self.resumed: ResumePoint | None = self._restore() if resume else None
        if self.resumed is None:
            (self.run_dir / "config.json").write_text(json.dumps(
                {**self.config, CODE_VERSION_KEY: code_version(*run_scope(self.config))},
                indent=2, sort_keys=True))
            (self.run_dir / CHECKPOINT).unlink(missing_ok=True)
            for name, cols in (("rounds.csv", ROUND_COLUMNS), ("messages.csv", MESSAGE_COLUMNS)):
                with (self.run_dir / name).open("w", newline="") as fh:
                    csv.writer(fh).writerow(cols)

    # --- resume ---------------------------------------------------------------------------
    def checkpoint(self, server_round: int, state: dict[str, Any]) -> None:
        """After round `server_round` is written: where a rerun of a killed run goes on."""
        point = {"round": server_round, "state": state,
                 "wall-s": self._elapsed_before + time.perf_counter() - self._t0}
        tmp = self.run_dir / (CHECKPOINT + ".tmp")
        tmp.write_text(json.dumps(point))
        tmp.replace(self.run_dir / CHECKPOINT)

    def _restore(self) -> ResumePoint | None:
        """Reload rows, message log and byte totals up to the checkpoint's round."""
        path = self.run_dir / CHECKPOINT
        if not path.is_file() or not (self.run_dir / "config.json").is_file():
            return None
        if (config_differs(self.run_dir, self.config, _unread(self.config))
                or not made_by_this_code(self.run_dir)):
            return None  # another computation, or other code: start afresh
        point = json.loads(path.read_text())
        last = int(point["round"])
        rows = _read_csv(self.run_dir / "rounds.csv")
        messages = _read_csv(self.run_dir / "messages.csv")
        rows = [r for r in rows if int(r["round"]) <= last]
        messages = [m for m in messages if int(m["round"]) <= last]
        _write_csv(self.run_dir / "rounds.csv", ROUND_COLUMNS, rows)  # drop the unfinished round
        _write_csv(self.run_dir / "messages.csv", MESSAGE_COLUMNS, messages)
        for r in rows:
            node_id, pid = int(r["node_id"]), int(r["node"])
            self.nodes[node_id] = {"node": pid, "model": r["model"]}
            self.partition_of_id[node_id] = pid
            values = {k: float(r[c]) for k, c in (("accuracy", "accuracy"), ("loss", "loss"),
                                                  ("common-samples", "common_samples"))
                      if r.get(c, "") != ""}
            self.metrics[int(r["round"])][node_id] = values
            if r.get("alive") == "1":
                self.alive[int(r["round"])].add(node_id)
            self._cum[pid] = [int(r["cum_bytes_up"]), int(r["cum_bytes_down"]),
                              int(r["cum_p2p_bytes"])]
            self._lost_before += int(r.get("lost_messages") or 0)
        self.meter.entries[:0] = [MeterEntry(
            int(m["round"]), m["direction"], int(m["node_id"]), m["message_type"], m["tag"],
            int(m["nbytes"]), m["kind"], int(m["peer_id"])) for m in messages]
        self._written_entries = len(messages)
        self._elapsed_before = float(point.get("wall-s", 0.0))
        return ResumePoint(last, point["state"])

    # --- recording ------------------------------------------------------------------------
    def add_node(self, node_id: int, partition_id: int) -> None:
        """Map a node id to its partition; after a resume a partition's new id replaces its
        old one."""
        for old in [n for n, info in self.nodes.items() if info["node"] == partition_id]:
            if old != node_id:
                del self.nodes[old]
        self.nodes[node_id] = {"node": partition_id, "model": self.model_for(partition_id)}
        self.partition_of_id[node_id] = partition_id

    @contextlib.contextmanager
    def server_work(self) -> Iterator[None]:
        """Time the method's own computation on the server (DLAD's distillation, FedAvg's
        averaging): `server-busy-s` in the summary, what `flower_gd.speed` counts as work."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.server_busy_s += time.perf_counter() - start

    def record(self, server_round: int, node_id: int, values: dict[str, float]) -> None:
        """Merge metrics reported by (or about) a node in a round."""
        self.metrics[server_round].setdefault(node_id, {}).update(values)

    def mark_alive(self, server_round: int, node_id: int) -> None:
        """The node answered a message of this round."""
        self.alive[server_round].add(node_id)

    def end_round(self, server_round: int) -> None:
        """Write the round's rows and the message-log entries metered since the last round."""
        wall = time.perf_counter() - self._round_start
        self._round_start = time.perf_counter()
        entries = self.meter.entries[self._written_entries:]
        self._written_entries = len(self.meter.entries)
        lost: dict[int, int] = defaultdict(int)
        if self.faults is not None:
            for item in self.faults.lost[self._written_lost:]:
                lost[item.node_id] += 1
            self._written_lost = len(self.faults.lost)
        self._append_messages(entries)
        per_node: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for e in entries:
            b = per_node[e.node_id]
            if e.kind == "p2p":
                b[f"p2p_bytes_{e.direction}"] += e.nbytes
            else:
                b[f"bytes_{e.direction}"] += e.nbytes
                b[f"{e.tag}_bytes"] += e.nbytes
        rows = []
        for node_id, info in sorted(self.nodes.items(), key=lambda kv: kv[1]["node"]):
            m = self.metrics[server_round].get(node_id, {})
            b = per_node[node_id]
            cum = self._cum[info["node"]]
            cum[0] += b["bytes_up"]
            cum[1] += b["bytes_down"]
            cum[2] += b["p2p_bytes_up"] + b["p2p_bytes_down"]
            rows.append({
                "round": server_round, "node": info["node"], "node_id": node_id,
                "model": info["model"], "accuracy": m.get("accuracy", ""),
                "loss": m.get("loss", ""), "val_accuracy": m.get("val-accuracy", ""),
                "val_loss": m.get("val-loss", ""), "top_share": m.get("top-share", ""),
                "diverged_steps": int(m.get("diverged-steps", 0)),
                "train_loss": m.get("train-loss", ""),
                "label_accuracy": m.get("label-accuracy", ""),
                "bytes_up": b["bytes_up"], "bytes_down": b["bytes_down"],
                "p2p_bytes_up": b["p2p_bytes_up"], "p2p_bytes_down": b["p2p_bytes_down"],
                **{f"{tag}_bytes": b[f"{tag}_bytes"] for tag in TAGS},
                "cum_bytes_up": cum[0],
                "cum_bytes_down": cum[1], "cum_p2p_bytes": cum[2],
                "node_wall_s": round(m.get("wall-s", 0.0), 4), "round_wall_s": round(wall, 3),
                "alive": int(node_id in self.alive[server_round]),
                "failed_pulls": int(m.get("failed-pulls", 0)), "lost_messages": lost[node_id],
                "payload_rejected": int(m.get("payload-rejected", 0)),
                "byzantine": int(info["node"] in self.byzantine),
                "common_samples": int(m["common-samples"]) if "common-samples" in m else "",
            })
        with (self.run_dir / "rounds.csv").open("a", newline="") as fh:
            csv.DictWriter(fh, ROUND_COLUMNS).writerows(rows)

    def _append_messages(self, entries: list[MeterEntry]) -> None:
        with (self.run_dir / "messages.csv").open("a", newline="") as fh:
            w = csv.writer(fh)
            for e in entries:
                w.writerow([getattr(e, c) for c in MESSAGE_COLUMNS])

    def finalize(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json (last, so its presence means the run finished)."""
        if self.meter.collect_late():  # replies that came after the last round's wait
            self._append_messages(self.meter.entries[self._written_entries:])
            self._written_entries = len(self.meter.entries)
        rounds = sorted(self.metrics)
        last = rounds[-1] if rounds else 0

        def accs(r: int) -> list[float]:
            """Accuracies of the honest nodes in round r (Byzantine nodes are adversaries)."""
            return [m["accuracy"] for n, m in self.metrics[r].items()
                    if "accuracy" in m and self.partition_of_id.get(n) not in self.byzantine]

        final = accs(last)
        honest_last = {n: m for n, m in self.metrics[last].items()
                       if self.partition_of_id.get(n) not in self.byzantine}
        diverged = {self.partition_of_id.get(n, n) for r in rounds
                    for n, m in self.metrics[r].items() if m.get("diverged-steps", 0) > 0}
        alive = {r: sorted(self.partition_of_id[n] for n in self.alive[r]
                           if n in self.partition_of_id) for r in rounds}
        per_round = {r: statistics.median(accs(r) or [float("nan")]) for r in rounds}
        by_model: dict[str, list[float]] = defaultdict(list)
        for node_id, m in self.metrics[last].items():
            if "accuracy" in m and node_id in self.nodes:
                by_model[self.nodes[node_id]["model"]].append(m["accuracy"])
        wire = [e for e in self.meter.entries if e.kind == "wire"]
        p2p = [e for e in self.meter.entries if e.kind == "p2p" and e.direction == "down"]
        scores = [e.nbytes for e in wire if e.tag == "scores" and e.direction == "up"]
        weights = [e.nbytes for e in wire if e.tag == "weights"]
        summary = {
            "method": self.config.get("method"),
            "dataset": self.config.get("dataset"),
            "partition-scheme": self.config.get("partition-scheme"),
            "model": self.config.get("model"),
            "seed": self.config.get("seed"),
            "num-nodes": self.config.get("num-nodes"),
            "rounds": last,
            "final": _stats(final),
            # the same nodes on the validation set: what every choice of settings reads
            "final-val": _stats([m["val-accuracy"] for m in honest_last.values()
                                 if "val-accuracy" in m]),
            # nodes whose last model answers one class for >= COLLAPSE_SHARE of the
            # validation set, and nodes that refused a NaN/inf training step in any round
            "collapsed-nodes": sum(m.get("top-share", 0.0) >= COLLAPSE_SHARE
                                   for m in honest_last.values()),
            "diverged-nodes": len(diverged),
            "median-accuracy-per-round": per_round,
            "median-accuracy-per-model": {k: statistics.median(v) for k, v in by_model.items()},
            "bytes": {
                "wire-up": sum(e.nbytes for e in wire if e.direction == "up"),
                "wire-down": sum(e.nbytes for e in wire if e.direction == "down"),
                "p2p": sum(e.nbytes for e in p2p),
                "by-tag": {t: sum(e.nbytes for e in wire if e.tag == t) for t in TAGS},
                # median sizes of one message, as sent: what a node shares (inference
                # list) and what a model costs (weights), the Table IV / Table II analogues
                "scores-message": statistics.median(scores) if scores else 0,
                "weights-message": statistics.median(weights) if weights else 0,
                # what one exchange costs: a peer-to-peer payload for gossip, otherwise an
                # upload of scores or of weights
                "payload-per-exchange": (statistics.median(e.nbytes for e in p2p) if p2p
                                         else statistics.median(scores) if scores
                                         else statistics.median(weights) if weights else 0),
                "messages": len(wire),
            },
            # common samples a node's inference list covers (0: the method shares none)
            "common-samples": int(max((m.get("common-samples", 0.0)
                                       for m in self.metrics.get(0, {}).values()), default=0)),
            "wall-s": round(self._elapsed_before + time.perf_counter() - self._t0, 2),
            "started-at": round(self._started_at, 3),
            "machine": machine(),
            "server-busy-s": round(self.server_busy_s, 3),
            "final-all-nodes": _stats([m["accuracy"] for m in self.metrics[last].values()
                                       if "accuracy" in m]),
            "byzantine-partitions": sorted(self.byzantine),
            # which local phase each node started from (flower_gd.local_phase): runs whose
            # keys agree started from bit-identical local models
            "local-phase": {
                str(self.partition_of_id[n]): {"key": f"{int(m['local-phase-key']):012x}",
                                               "parts": int(m.get("local-phase-parts", 1)),
                                               "reused": int(m.get("local-phase-reused", 0))}
                for n, m in sorted(self.metrics.get(0, {}).items())
                if "local-phase-key" in m and n in self.partition_of_id},
            "faults": {
                "lost-messages": self._lost_before + (len(self.faults.lost)
                                                      if self.faults is not None else 0),
                "alive-per-round": alive,
                # nodes that answered in round 0 but not in the last round: dead or gone
                "lost-nodes": sorted(set(alive.get(rounds[0], [])) - set(alive.get(last, [])))
                if rounds else [],
            },
        }
        summary.update(extra or {})
        self._check_code_unchanged()
        (self.run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary

    def _check_code_unchanged(self) -> None:
        """A file of the run's scope edited while it ran: the run computed with the code this
        process loaded, which its record can no longer name. Its code-version says so, so
        that no sweep reuses it (it is re-measured)."""
        method, codec = run_scope(self.config)
        if still_this_code(method, codec):
            return
        path = self.run_dir / "config.json"
        saved = json.loads(path.read_text())
        saved[CODE_VERSION_KEY] = {**saved[CODE_VERSION_KEY], "source": "changed-during-run"}
        path.write_text(json.dumps(saved, indent=2, sort_keys=True))
        warnings.warn(f"{self.run_dir}: the source of method={method}"
                      f"{f' codec={codec}' if codec else ''} changed on disk while "
                      "it ran; the run is kept but marked, and a sweep will re-measure it",
                      stacklevel=2)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "mean": float("nan"), "min": float("nan"),
                "max": float("nan")}
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "min": min(values), "max": max(values)}
