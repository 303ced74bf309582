"""Read saved runs back and compute the comparison tables (no run is ever re-executed).

Runs are grouped by their config values, never by parsing names: a run's settings are the
keys its method reads whose value differs from today's defaults (`methods.settings`), and a
table that varies one group of keys (codecs, attacks, faults) compares runs equal in the rest.
"""

from __future__ import annotations

import csv
import functools
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flower_gd import methods
from flower_gd.config import (
    ATTACK_KEYS,
    CODEC_KEYS,
    FAULT_KEYS,
    format_setting,
    load_defaults,
    upgrade,
)
from flower_gd.metering import LEGACY_TAGS, MIB
from flower_gd.provenance import made_by_this_code
from flower_gd.results import SUMMARY

PARTITION_ORDER = ["iid", "niid1", "niid2", "niid3", "niid4"]
ROBUST_KEYS = ("robust-mix", "clip-radius")
Table = tuple[list[str], list[list[str]]]


@functools.cache
def _defaults() -> dict[str, Any]:
    return load_defaults()


# What defines the experiment a run belongs to (the dataset, the fleet, the splits' sizes, the
# model): runs differing in one are never averaged in one cell, paired, or chosen between.
EXPERIMENT_KEYS = ("dataset", "num-nodes", "private-fraction", "val-fraction", "val-limit",
                   "common-limit", "test-limit", "dirichlet-alpha", "model", "pretrained")


@dataclass(frozen=True)
class SavedRun:
    """One finished run directory: summary, resolved config and per-round per-node rows."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, str]]
    settings: dict[str, Any] = field(default_factory=dict)  # off the defaults, see module doc
    stale: bool = False  # made by other code than this process's (kept with reuse-stale)

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.summary["method"]))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.summary.get("seed", 0)))

    def label(self, hide: Iterable[str] = ()) -> str:
        """The method and its settings off the defaults (but those in `hide`), e.g.
        ``gossip-adaptive gossip-peers=2 round-epochs=2``."""
        shown = [format_setting(k, v) for k, v in self.settings.items() if k not in set(hide)]
        return " ".join([self.method, *shown])

    def off_default(self, keys: Iterable[str]) -> bool:
        """Whether any of `keys` is off its default in this run."""
        return any(k in self.settings for k in keys)

    @property
    def experiment(self) -> tuple[Any, ...]:
        """The run's EXPERIMENT_KEYS values beyond dataset, model and partition (which tables
        key on already; the partition names a Dirichlet partition's alpha)."""
        defaults = _defaults()  # a key a saved config lacks is its default, as in `settings`
        return tuple(self.config.get(k, defaults.get(k)) for k in EXPERIMENT_KEYS
                     if k not in ("dataset", "model", "dirichlet-alpha"))

    @property
    def attackers(self) -> int:
        return int(self.config.get("byzantine-nodes", 0))

    @property
    def clean(self) -> bool:
        """A run of the comparison proper: attacks, faults and the robust mix at their
        defaults (the other tables and Fig. 6 show the rest)."""
        return not self.off_default((*ATTACK_KEYS, *FAULT_KEYS, *ROBUST_KEYS))

    @property
    def faulty(self) -> bool:
        return self.off_default(FAULT_KEYS)

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or self.config.get("model", ""))

    @property
    def partition(self) -> str:
        scheme = self.config["partition-scheme"]
        return f"dirichlet({self.config['dirichlet-alpha']:g})" if scheme == "dirichlet" else scheme

    @property
    def dataset(self) -> str:
        return str(self.summary["dataset"])

    @property
    def machine(self) -> str | None:
        """The CPU the run ran on (model and flags digest), None where it was not recorded."""
        m = self.summary.get("machine") or {}
        return f"{m['cpu']}/{m.get('cpu-flags', '?')}" if m else None

    @property
    def final_median(self) -> float:
        return float(self.summary["final"]["median"])

    @property
    def bytes(self) -> dict[str, Any]:
        return dict(self.summary["bytes"])

    @property
    def wire_bytes(self) -> int:
        return int(self.bytes["wire-up"] + self.bytes["wire-down"])

    @property
    def local_median(self) -> float | None:
        """Median node accuracy after the local phase (round 0 of the nodes' own models)."""
        if not any(r["round"] == "0" and int(r["node"]) >= 0 and r["accuracy"] != ""
                   for r in self.rows):
            return None  # no local phase (FedAvg), or round 0 is a server's model (central)
        return float(self.summary["median-accuracy-per-round"]["0"])

    def curve(self) -> list[tuple[int, float, int]]:
        """(round, median node accuracy, cumulative wire bytes of all nodes) per round."""
        by_round: dict[int, list[dict[str, str]]] = defaultdict(list)
        for r in self.rows:
            by_round[int(r["round"])].append(r)
        out = []
        for rnd in sorted(by_round):
            rows = by_round[rnd]
            accs = [float(r["accuracy"]) for r in rows if r["accuracy"] not in ("", None)]
            total = sum(int(r["cum_bytes_up"]) + int(r["cum_bytes_down"]) for r in rows)
            if accs:
                out.append((rnd, statistics.median(accs), total))
        return out

    def bytes_to_final(self, tolerance: float = 0.005) -> int:
        """Cumulative wire bytes at the first round whose median accuracy is within
        `tolerance` of the final one (what reaching the final accuracy cost)."""
        curve = self.curve()
        for _, acc, total in curve:
            if acc >= self.final_median - tolerance:
                return total
        return curve[-1][2] if curve else 0


def _upgrade_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary under today's names (the `logits` tag is now `scores`)."""
    b = dict(summary["bytes"])
    b["by-tag"] = {LEGACY_TAGS.get(k, k): v for k, v in b.get("by-tag", {}).items()}
    if "logits-message" in b:
        b["scores-message"] = b.pop("logits-message")
    return {**summary, "bytes": b}


def load_runs(root: Path) -> list[SavedRun]:
    """Every finished run (a directory with summary.json) under `root`; hidden folders
    (the local-phase cache, runs set aside as made by other code) are not runs."""
    runs = []
    defaults = load_defaults()
    root = Path(root)
    for path in sorted(root.rglob(SUMMARY)):
        d = path.parent
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue
        with (d / "rounds.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        saved = json.loads((d / "config.json").read_text())
        config = upgrade(dict(saved))
        runs.append(SavedRun(d, _upgrade_summary(json.loads(path.read_text())), config, rows,
                             methods.settings(config, defaults),
                             not made_by_this_code(d, saved)))
    if not runs:
        raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
    return runs


def shared_settings(runs: list[SavedRun]) -> dict[str, Any]:
    """Settings every run has, with the same value: said once, not in every label."""
    if not runs:
        return {}
    common = dict(runs[0].settings)
    for run in runs[1:]:
        common = {k: v for k, v in common.items() if k in run.settings and run.settings[k] == v}
    return common


def _hidden(runs: list[SavedRun], shared: dict[str, Any] | None) -> set[str]:
    """Keys left out of labels: those `shared` by the report's runs (these runs' own if
    None), said once above the tables."""
    return set(shared_settings(runs) if shared is None else shared)


def ordered(values: Iterable[str], order: list[str]) -> list[str]:
    """`values` in the order of `order`, unknown ones last, sorted."""
    values = set(values)
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def label_key(label: str) -> tuple[int, str]:
    """Sort key of a label: the registry's method order, then the settings alphabetically."""
    method, _, rest = label.partition(" ")
    return (methods.order(method), rest)


def partition_key(partition: str) -> int:
    return PARTITION_ORDER.index(partition) if partition in PARTITION_ORDER else 99


# two-sided 95% quantiles of Student's t by degrees of freedom (n seeds - 1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
        16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
        23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
        30: 2.042}
Z975 = 1.959964


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom: the table to 30, then
    the Cornish-Fisher expansion about the normal quantile (within 1e-4 from 31 on)."""
    if df in T975:
        return T975[df]
    z, v = Z975, float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval over seeds (None for one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, t975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def format_interval(values: list[float], scale: float = 1.0, digits: int = 4,
                    signed: bool = False) -> str:
    """``mean ± half (n)`` with the 95% t-interval's half-width; one value: ``mean (1 seed)``."""
    m, half = t_interval([v * scale for v in values])
    return _formatted(m, half, len(values), digits, signed)


def _formatted(m: float, half: float | None, n: int, digits: int, signed: bool) -> str:
    sign = "+" if signed else ""
    if half is None:
        return f"{m:{sign}.{digits}f} (1 seed)"
    return f"{m:{sign}.{digits}f} ± {half:.{digits}f} ({n})"


def paired_text(diffs: list[float]) -> str:
    """Paired differences (fractions) as points: ``mean ± h (n)``, ``n.d.`` where the 95%
    interval spans 0; ``–`` without a shared seed."""
    if not diffs:
        return "–"
    m, half = t_interval([100 * d for d in diffs])
    text = _formatted(m, half, len(diffs), digits=2, signed=True)
    return text + " n.d." if half is not None and m - half <= 0 <= m + half else text


def accuracy_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Table V analogue: final median node accuracy, method x partition, per dataset.

    Cells read ``mean ± h (n)``: the mean over n seeds and the half-width h of its 95%
    t-interval; ``(1 seed)`` where there is one run (a smoke test, not a result); a ``†``
    marks a cell holding a run made by other code (kept with reuse-stale).
    """
    hide = _hidden(runs, shared)
    by_seed: dict[tuple[str, str, str, str], dict[int, SavedRun]] = defaultdict(dict)
    for run in runs:
        one_per_seed(by_seed[(run.dataset, run.model, run.label(hide), run.partition)], run, run)
    cells = {k: list(v.values()) for k, v in by_seed.items()}
    partitions = ordered({k[3] for k in cells}, PARTITION_ORDER)
    header = ["dataset", "model", "method", *partitions]
    body = []
    for dataset, model in sorted({k[:2] for k in cells}):
        labels = {k[2] for k in cells if k[:2] == (dataset, model)}
        for label in sorted(labels, key=label_key):
            line = [dataset, model, label]
            for p in partitions:
                group = cells.get((dataset, model, label, p))
                if not group:
                    line.append("")
                    continue
                mark = " †" if any(r.stale for r in group) else ""
                line.append(format_interval([r.final_median for r in group]) + mark)
            body.append(line)
    return header, body


def paired_table(runs: list[SavedRun], reference: str,
                 shared: dict[str, Any] | None = None) -> Table:
    """Each method minus `reference` (a label, e.g. ``dlad``) in final median accuracy,
    paired by seed (the same seed gives the same split and the same local models), in
    percentage points: ``mean ± h (n)``, h the 95% t-interval's half-width over the paired
    differences; ``n.d.`` (not distinguishable) where the interval spans 0. A ``‡`` marks a
    cell where a seed's two runs ran on different CPUs (or one did not record its own): a
    local phase computed on each machine differs in its last bits and, through training, by
    more, so such a pair shares its split but not bit-identical local models."""
    hide = _hidden(runs, shared)
    by: dict[tuple[str, str, str, str], dict[tuple[tuple[Any, ...], int], SavedRun]] = \
        defaultdict(dict)
    for run in runs:
        # paired only within one experiment
        one_per_seed(by[(run.dataset, run.model, run.label(hide), run.partition)], run, run,
                     key=(run.experiment, run.seed))
    partitions = ordered({k[3] for k in by}, PARTITION_ORDER)
    header = ["dataset", "model", f"method - {reference} (points)", *partitions]
    body = []
    for dataset, model in sorted({k[:2] for k in by}):
        labels = {k[2] for k in by if k[:2] == (dataset, model)} - {reference}
        for label in sorted(labels, key=label_key):
            line = [dataset, model, label]
            for p in partitions:
                mine = by.get((dataset, model, label, p), {})
                ref = by.get((dataset, model, reference, p), {})
                seeds = sorted(set(mine) & set(ref), key=lambda k: (str(k[0]), k[1]))
                if not seeds:
                    line.append("")
                    continue
                mark = " †" if any(mine[s].stale or ref[s].stale for s in seeds) else ""
                if any(mine[s].machine != ref[s].machine for s in seeds):
                    mark += " ‡"  # the pair's two runs computed on different CPUs
                line.append(paired_text([mine[s].final_median - ref[s].final_median
                                         for s in seeds]) + mark)
            if any(line[3:]):
                body.append(line)
    return header, body


def bytes_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Tables II/IV analogue: measured bytes of one exchange per method, against the model.

    ``payload`` is one message as sent (gossip: the relayed inference list; DLAD: one upload;
    FedAvg: one model update); ``model`` is a weights message measured in the same
    dataset's runs that send one. MiB = 2^20 bytes.
    """
    hide = _hidden(runs, shared)
    model_bytes: dict[tuple[str, str], list[float]] = defaultdict(list)
    groups: dict[tuple[str, str, str], list[SavedRun]] = defaultdict(list)
    for run in runs:
        if run.bytes.get("weights-message", 0):
            model_bytes[(run.dataset, run.model)].append(run.bytes["weights-message"])
        groups[(run.dataset, run.model, run.label(hide))].append(run)
    header = ["dataset", "model", "method", "payload per exchange (bytes)", "payload (MiB)",
              "model message (bytes)", "payload / model", "scores total (MiB)",
              "weights total (MiB)", "data total (MiB)", "total wire (MiB)",
              "bytes to reach final acc. (MiB)"]
    body = []
    for (dataset, family, label), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], label_key(kv[0][2]))):
        payload = statistics.median(r.bytes["payload-per-exchange"] for r in group)
        sizes = model_bytes[(dataset, family)]
        model = statistics.median(sizes) if sizes else 0
        wire = statistics.fmean(r.wire_bytes for r in group)
        reach = statistics.fmean(r.bytes_to_final() for r in group)
        by_tag = [statistics.fmean(r.bytes["by-tag"].get(t, 0) for r in group) / MIB
                  for t in ("scores", "weights", "data")]
        mark = " †" if any(r.stale for r in group) else ""
        body.append([dataset, family, label + mark, f"{payload:.0f}", f"{payload / MIB:.3f}",
                     f"{model:.0f}" if model else "", f"{payload / model:.3f}" if model else "",
                     *(f"{b:.2f}" for b in by_tag), f"{wire / MIB:.2f}", f"{reach / MIB:.2f}"])
    return header, body


def codec_of(run: SavedRun) -> str:
    """The run's codec as a table shows it (`topk2` = top-k with k = 2)."""
    codec = str(run.config.get("codec", "float32"))
    return f"topk{run.config.get('codec-topk', 2)}" if codec == "topk" else codec


def bits_per_sample(run: SavedRun) -> float | None:
    """One exchange's bits per common sample, all in: the payload message as Flower sends
    it (scores, per-sample weights or confidences, metadata, framing) x 8 / common samples.
    None where the run shares no inference list or predates the `common-samples` record."""
    n = int(run.summary.get("common-samples", 0) or 0)
    per_round = int(run.config.get("public-per-round", 0) or 0)
    method = methods.REGISTRY.get(run.method)
    if per_round and method is not None and "public-per-round" in method.reads:
        n = min(n, per_round)  # fedmd, ds-fl, dist-distill: a subset of X_c per round
    return 8 * float(run.bytes["payload-per-exchange"]) / n if n else None


@dataclass
class CodecCell:
    """One codec of one (dataset, method, partition) group, over its seeds, beside the
    default codec's runs of the same settings."""

    dataset: str
    method: str
    partition: str
    codec: str
    payload: float  # mean bytes of one exchange
    bits: float | None  # mean bits per common sample, all in
    fewer: float  # default payload / this payload
    accs: list[float]  # final median accuracy per seed
    diffs: list[float]  # minus the default codec's run of the same seed, per shared seed
    default_accs: list[float]
    is_default: bool


def codec_cells(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> list[CodecCell]:
    """Every codec of every group measured with more than one codec, the default included."""
    hide = {*_hidden(runs, shared), *CODEC_KEYS}
    groups: dict[tuple[str, str, str, str, tuple[Any, ...]], dict[str, dict[int, SavedRun]]] = \
        defaultdict(lambda: defaultdict(dict))
    for run in runs:
        if run.bytes["payload-per-exchange"] > 0:
            key = (run.dataset, run.model, run.label(hide), run.partition, run.experiment)
            one_per_seed(groups[key][codec_of(run)], run, run)
    default = str(load_defaults()["codec"])
    groups = {k: v for k, v in groups.items() if default in v and len(v) > 1}
    models = defaultdict(set)  # a dataset shown with several models names each cell's model
    for dataset, model, *_ in groups:
        models[dataset].add(model)
    cells = []
    for (dataset, model, label, partition, _), by_codec in groups.items():
        if len(models[dataset]) > 1:
            label = f"{label} [{model}]"
        ref = by_codec[default]
        ref_payload = statistics.fmean(r.bytes["payload-per-exchange"] for r in ref.values())
        for codec, seeds in by_codec.items():
            bits = [b for b in map(bits_per_sample, seeds.values()) if b is not None]
            payload = statistics.fmean(r.bytes["payload-per-exchange"] for r in seeds.values())
            cells.append(CodecCell(
                dataset, label, partition, codec, payload,
                statistics.fmean(bits) if bits else None, ref_payload / payload,
                [r.final_median for r in seeds.values()],
                [seeds[s].final_median - ref[s].final_median
                 for s in sorted(set(seeds) & set(ref))],
                [r.final_median for r in ref.values()], codec == default))
    cells.sort(key=lambda c: (c.dataset, label_key(c.method), partition_key(c.partition),
                              c.fewer))
    return cells


def codec_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Accuracy against bytes per codec, over seeds: each codec beside the default codec's
    runs that are equal in every other setting. Bits per common sample all in; accuracy
    ``mean ± h (n)``; the difference from the default paired by seed (``n.d.`` where its
    interval spans 0); and whether the codec's mean lies inside the default's 95% interval.
    Only groups measured with more than one codec appear."""
    header = ["dataset", "method", "partition", "codec", "bits per common sample",
              "payload per exchange (bytes)", "x fewer than default", "final median acc.",
              "vs default (points, paired)", "inside default's interval"]
    body = []
    for c in codec_cells(runs, shared):
        ref_mean, ref_half = t_interval(c.default_accs)
        mean = statistics.fmean(c.accs)
        if c.is_default or not c.diffs:
            versus = inside = "–"
        else:
            versus = paired_text(c.diffs)
            inside = ("–" if ref_half is None
                      else "yes" if abs(mean - ref_mean) <= ref_half else "no")
        body.append([c.dataset, c.method, c.partition, c.codec,
                     "–" if c.bits is None else f"{c.bits:.1f}", f"{c.payload:.0f}",
                     f"{c.fewer:.1f}", format_interval(c.accs), versus, inside])
    return header, body


def one_per_seed(cell: dict[Any, Any], run: SavedRun, value: Any, key: Any = None) -> None:
    """Put `value` under `key` (the run's seed unless given: a key that holds the seed); a
    second run of the same cell and seed (a copy, or runs that differ only in settings the
    table does not show) is an error, not a mean."""
    key = run.seed if key is None else key
    if key in cell:
        raise ValueError(f"{run.path} repeats a cell and seed another run already fills: "
                         "move one of them out of the results directory")
    cell[key] = value


def _group_key(k: tuple[str, str, str, str]) -> tuple[str, str, int, str, tuple[int, str]]:
    """(dataset, model, partition, label): dataset, model, partition order, label order."""
    return (k[0], k[1], partition_key(k[2]), k[2], label_key(k[3]))


@dataclass(frozen=True)
class ByzantineLine:
    """One method (and robust mix) under one attack in one (dataset, model, partition): final
    median accuracy of the honest nodes by seed, per number of attackers (0: the run without
    attackers equal in every other setting)."""

    dataset: str
    model: str
    partition: str
    method: str
    attack: str
    by_count: dict[int, dict[int, float]]  # attackers -> seed -> accuracy


def byzantine_lines(runs: list[SavedRun], shared: dict[str, Any] | None = None
                    ) -> list[ByzantineLine]:
    hide = {*_hidden(runs, shared), *ATTACK_KEYS}

    def group(run: SavedRun) -> tuple[str, str, str, str]:
        return (run.dataset, run.model, run.partition, run.label(hide))

    studied = {group(r) for r in runs if r.off_default((*ATTACK_KEYS, *ROBUST_KEYS))}
    attacks: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # run where attacked
    for run in runs:
        if run.attackers:
            attacks[group(run)[:3]].add(str(run.config["byzantine-attack"]))
    cells: dict[tuple[str, str, str, str, str], dict[int, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict))
    for run in runs:
        if run.faulty or group(run) not in studied:
            continue
        own = ([str(run.config["byzantine-attack"])] if run.attackers
               else sorted(attacks[group(run)[:3]]))
        for attack in own:  # a run without attackers is the 0 of every attack run beside it
            one_per_seed(cells[(*group(run), attack)][run.attackers], run, run.final_median)
    keys = sorted(cells, key=lambda k: (*_group_key(k[:4]), k[4]))
    return [ByzantineLine(*k, {n: dict(v) for n, v in cells[k].items()}) for k in keys]


def byzantine_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Final median accuracy of the honest nodes with 0, 1, 3, ... Byzantine nodes, per
    method (and robust mix), dataset, model and partition, ``mean ± h (n)`` over seeds; the
    0 column is the run without attackers that is equal in every other setting. The last
    column: the line's most attackers against none, paired by seed, in points."""
    lines = byzantine_lines(runs, shared)
    counts = sorted({n for line in lines for n in line.by_count} | {0})
    header = ["dataset", "model", "partition", "method", "attack",
              *(f"{n} attacker(s)" for n in counts), "most attackers vs none (points, paired)"]
    body = []
    for line in lines:
        row = [line.dataset, line.model, line.partition, line.method, line.attack]
        for n in counts:
            seeds = line.by_count.get(n, {})
            row.append(format_interval(list(seeds.values())) if seeds else "")
        most = max(line.by_count)
        none, worst = line.by_count.get(0, {}), line.by_count[most]
        shared_seeds = sorted(set(none) & set(worst))
        row.append(f"{most} vs 0: " + paired_text([worst[s] - none[s] for s in shared_seeds])
                   if most and shared_seeds else "–")
        body.append(row)
    return header, body


def fault_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Each method without faults and under each fault setting, over seeds: final median
    accuracy of the nodes alive at the end (``mean ± h (n)``), its change against the same
    method without faults paired by seed (points), and the means of nodes alive, failed
    pulls, lost messages and wire MiB."""
    hide = {*_hidden(runs, shared), *FAULT_KEYS}

    def group(run: SavedRun) -> tuple[str, str, str, str]:
        return (run.dataset, run.model, run.partition, run.label(hide))

    studied = {group(r) for r in runs if r.faulty}
    cells: dict[tuple[str, str, str, str], dict[str, dict[int, SavedRun]]] = defaultdict(
        lambda: defaultdict(dict))
    for run in runs:
        if group(run) not in studied or run.attackers:
            continue
        fault = " ".join(format_setting(k, v) for k, v in run.settings.items()
                         if k in FAULT_KEYS) or "none"
        one_per_seed(cells[group(run)][fault], run, run)
    header = ["dataset", "model", "partition", "method", "faults", "final median acc.",
              "vs no faults (points, paired)", "alive at end", "failed pulls",
              "lost messages", "wire (MiB)"]
    body = []
    for key in sorted(cells, key=_group_key):
        by_fault = cells[key]
        clean = {seed: r.final_median for seed, r in by_fault.get("none", {}).items()}
        for fault in sorted(by_fault, key=lambda f: (f != "none", f)):
            group_runs = list(by_fault[fault].values())
            faults = [r.summary.get("faults", {}) for r in group_runs]
            alive = [len(f.get("alive-per-round", {}).get(str(r.summary["rounds"]), []))
                     for f, r in zip(faults, group_runs, strict=True)]
            versus = "–" if fault == "none" else paired_text(
                [r.final_median - clean[r.seed] for r in group_runs if r.seed in clean])
            body.append([
                *key, fault, format_interval([r.final_median for r in group_runs]), versus,
                f"{statistics.fmean(alive):.1f}",
                f"{statistics.fmean(r.summary.get('failed-pulls', 0) for r in group_runs):.1f}",
                f"{statistics.fmean(f.get('lost-messages', 0) for f in faults):.1f}",
                f"{statistics.fmean(r.wire_bytes for r in group_runs) / MIB:.2f}"])
    return header, body


def model_family_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """Table VI analogue for mixed fleets: per model family, the median final accuracy of
    its nodes, ``mean ± h (n)`` over seeds, beside the whole fleet's median.

    A method that ends with one global model (DLAD) gives every node that model, whatever
    the node's own family: its row names the global model instead.
    """
    hide = _hidden(runs, shared)
    header = ["dataset", "fleet", "partition", "method", "family", "nodes",
              "final median acc.", "fleet median acc."]
    fleets: dict[tuple[str, str, str, str], dict[int, SavedRun]] = defaultdict(dict)
    for run in (r for r in runs if "," in r.model):
        key = (run.dataset, run.model.replace(",", "+"), run.partition, run.label(hide))
        one_per_seed(fleets[key], run, run)
    body = []
    for key in sorted(fleets, key=_group_key):
        by_family: dict[str, list[list[float]]] = defaultdict(list)  # family -> per seed
        for run in fleets[key].values():
            for family, accs in _final_by_family(run).items():
                by_family[family].append(accs)
        fleet = format_interval([r.final_median for r in fleets[key].values()])
        for family in sorted(by_family):
            seeds = by_family[family]
            body.append([*key, family, f"{statistics.fmean(len(a) for a in seeds):g}",
                         format_interval([statistics.median(a) for a in seeds]), fleet])
    return header, body


def _final_by_family(run: SavedRun) -> dict[str, list[float]]:
    """The final round's node accuracies of a mixed-fleet run, by model family (a method
    that ends with one global model files every node under ``global <model>``)."""
    last = max(int(r["round"]) for r in run.rows)
    global_model = methods.get(run.method).global_model
    mine: dict[str, list[float]] = defaultdict(list)
    for r in run.rows:
        if int(r["round"]) == last and r["accuracy"] not in ("", None):
            family = f"global {run.model.split(',')[0]}" if global_model else r["model"]
            mine[family].append(float(r["accuracy"]))
    return mine


def assist_table(runs: list[SavedRun], shared: dict[str, Any] | None = None) -> Table:
    """The teacher-assistant option's effect in mixed fleets: per model family, the median
    final accuracy of its nodes with `gossip-assist` on minus the same run without it (every
    other setting equal, same seed: same split and local models), as paired points over
    seeds; the fleet's median likewise."""
    hide = _hidden(runs, shared) | {"gossip-assist"}
    cells: dict[tuple[str, str, str, str], dict[str, dict[int, SavedRun]]] = defaultdict(
        lambda: defaultdict(dict))
    for run in (r for r in runs if "," in r.model):
        assist = str(run.config.get("gossip-assist", "none"))
        key = (run.dataset, run.model.replace(",", "+"), run.partition, run.label(hide))
        one_per_seed(cells[key][assist], run, run)
    header = ["dataset", "fleet", "partition", "method", "assist", "family",
              "assist - none (points, paired)"]
    body = []
    for key in sorted(cells, key=_group_key):
        plain = cells[key].get("none", {})
        for assist in sorted(a for a in cells[key] if a != "none"):
            seeds = sorted(set(plain) & set(cells[key][assist]))
            if not seeds:
                continue
            pairs = [(_final_by_family(plain[s]), _final_by_family(cells[key][assist][s]))
                     for s in seeds]
            for family in sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))):
                diffs = [statistics.median(b[family]) - statistics.median(a[family])
                         for a, b in pairs]
                body.append([*key, assist, family, paired_text(diffs)])
            fleet = [cells[key][assist][s].final_median - plain[s].final_median for s in seeds]
            body.append([*key, assist, "whole fleet", paired_text(fleet)])
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)
