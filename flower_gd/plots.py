"""Figures drawn from saved results only (PNG and PDF), one command each.

Usage::

    python -m flower_gd.plots {fig1,fig2,fig3,fig4,fig5,fig6,fig7,all} RESULTS_DIR [--out figures]

fig1: payload per exchange against model bytes, per dataset; fig2: final median accuracy
per method and partition; fig3: median accuracy per round, one panel per partition;
fig4: median accuracy against cumulative bytes, all methods; fig5: final accuracy against
bytes per exchange, one point per payload codec; fig6: accuracy of the honest nodes against
the number of Byzantine nodes; fig7: final accuracy against the bytes of the whole run, every
method and codec, the Pareto front marked. Runs with attackers or faults appear only in
fig6. Figs. 2-4 and 7 show one configuration per method: the one chosen on validation where
the method was tuned, else the one with the default codec measured on the most partitions
(other variants are in the tables; codec variants also in fig5 and fig7). Error bars (figs.
2, 7) and bands (fig3) show the 95% t-interval over seeds where there are several.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from flower_gd import methods
from flower_gd.config import CODEC_KEYS
from flower_gd.metering import MIB
from flower_gd.select import select
from flower_gd.tables import (
    PARTITION_ORDER,
    SavedRun,
    byzantine_lines,
    codec_cells,
    label_key,
    load_runs,
    ordered,
    partition_key,
    shared_settings,
    t_interval,
)

matplotlib.use("Agg")  # batch figures: never open a window
Curve = list[tuple[int, float, float, float]]  # (round, mean acc, sd acc, mean cum. bytes)


def _color(label: str) -> str | None:
    """The registry's colour of the method a label starts with."""
    name = label.split(" ")[0]
    return methods.REGISTRY[name].color if name in methods.REGISTRY else None


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    if fig.get_layout_engine() is None:  # a figure made with a layout keeps it
        fig.tight_layout()
    for p in paths:
        # no creation date in the PDF: the same runs redraw the same bytes (no churn in git)
        fig.savefig(p, dpi=150,
                    metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def fig1_payload_vs_model(runs: list[SavedRun], out: Path) -> list[Path]:
    """Bytes of one exchange per method that shares scores, against the model's weights
    message, per dataset (single-family fleets)."""
    datasets = sorted({r.dataset for r in runs})
    sharing = [name for name, m in methods.REGISTRY.items() if "scores" in m.shares]
    model_kind = "model (weights message)"
    values = defaultdict(list)
    for r in runs:
        b = r.bytes
        if r.method in sharing and "," not in r.model:
            values[(r.dataset, f"{r.method} payload")].append(b["payload-per-exchange"])
        if b.get("weights-message"):
            values[(r.dataset, model_kind)].append(b["weights-message"])
    kinds = [f"{m} payload" for m in sharing if any(k[1] == f"{m} payload" for k in values)]
    kinds.append(model_kind)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.8 + 2.2 * len(datasets)), 4))
    width = 0.8 / len(kinds)
    x = np.arange(len(datasets))
    lowest = []
    for k, kind in enumerate(kinds):
        heights = [statistics.median(values[(d, kind)]) / MIB if values[(d, kind)] else 0
                   for d in datasets]
        lowest += [h for h in heights if h > 0]
        bars = ax.bar(x + (k - (len(kinds) - 1) / 2) * width, heights, width, label=kind,
                      color=_color(kind))
        ax.bar_label(bars, labels=[f"{h:.3f}" if h else "" for h in heights], fontsize=7)
    ax.set_xticks(x, datasets)
    ax.set_yscale("log")
    if lowest:
        ax.set_ylim(bottom=min(lowest) / 3)
    ax.set_ylabel("MiB per exchange (2^20 B, log)")
    ax.set_title("Fig. 1: one exchange vs the model")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out, "fig1_payload_vs_model")


def _interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95% t half-width over seeds (0 for one seed; NaN mean for none)."""
    if not values:
        return float("nan"), 0.0
    mean, half = t_interval(values)
    return mean, half or 0.0


def _experiments(runs: list[SavedRun]) -> list[tuple[str, str, list[SavedRun]]]:
    """The runs per dataset and model, each with its figure's name suffix and title: the
    dataset alone where it was run with one model (as a table keys cells by both, a figure
    never averages two models in one mark)."""
    out = []
    for dataset in sorted({r.dataset for r in runs}):
        models = sorted({r.model for r in runs if r.dataset == dataset})
        for model in models:
            name = dataset if len(models) == 1 else f"{dataset}_{model}"
            out.append((name, name.replace("_", " "),
                        [r for r in runs if r.dataset == dataset and r.model == model]))
    return out


def fig2_final_accuracy(runs: list[SavedRun], out: Path) -> list[Path]:
    """Final median node accuracy per method and partition: mean over seeds, error bars the
    95% t-interval (none for one seed)."""
    paths = []
    hide = shared_settings(runs)
    for name, title, sub in _experiments(runs):
        labels = sorted({r.label(hide) for r in sub}, key=label_key)
        partitions = ordered({r.partition for r in sub}, PARTITION_ORDER)
        cells = defaultdict(list)
        for r in sub:
            cells[(r.label(hide), r.partition)].append(r.final_median)
        fig, ax = plt.subplots(figsize=(2 + 1.6 * len(partitions), 4))
        width = 0.8 / len(labels)
        x = np.arange(len(partitions))
        for k, m in enumerate(labels):
            stats = [_interval(cells[(m, p)]) for p in partitions]
            ax.bar(x + (k - (len(labels) - 1) / 2) * width, [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], capsize=2, label=m, color=_color(m))
        ax.set_xticks(x, partitions)
        ax.set_ylim(0, 1)
        ax.set_ylabel("final median node accuracy")
        ax.set_title(f"Fig. 2: final accuracy, {title}")
        ax.legend(fontsize=7, ncol=2)
        paths += _save(fig, out, f"fig2_final_accuracy_{name}")
    return paths


def _mean_curves(runs: list[SavedRun], hide: dict[str, Any]) -> dict[str, Curve]:
    """label -> list of (round, mean acc, 95% t half-width (0 for one seed), mean cumulative
    bytes) over seeds."""
    by_method = defaultdict(list)
    for r in runs:
        by_method[r.label(hide)].append(r.curve())
    out = {}
    for m, curves in by_method.items():
        rounds = sorted({rnd for c in curves for rnd, _, _ in c})
        pts = []
        for rnd in rounds:
            accs = [a for c in curves for r_, a, _ in c if r_ == rnd]
            bytes_ = [b for c in curves for r_, _, b in c if r_ == rnd]
            mu, half = _interval(accs)
            pts.append((rnd, mu, half, statistics.fmean(bytes_)))
        out[m] = pts
    return out


def _per_partition(runs: list[SavedRun], out: Path, name: str, title: str, xlabel: str,
                   draw: Callable[[Axes, str, Curve], None], xscale: str | None = None
                   ) -> list[Path]:
    """One figure per dataset (and model, where it has several), one panel per partition,
    `draw(ax, method, curve)` per method."""
    paths = []
    hide = shared_settings(runs)
    for suffix, label, sub in _experiments(runs):
        partitions = ordered({r.partition for r in sub}, PARTITION_ORDER)
        fig, axes = plt.subplots(1, len(partitions), figsize=(3.3 * len(partitions), 3.4),
                                 squeeze=False, sharey=True)
        for ax, p in zip(axes[0], partitions, strict=True):
            curves = _mean_curves([r for r in sub if r.partition == p], hide)
            for m in sorted(curves, key=label_key):
                draw(ax, m, curves[m])
            if xscale:
                ax.set_xscale(xscale)
            ax.set_title(p)
            ax.set_xlabel(xlabel)
            ax.set_ylim(0, 1)
        axes[0][0].set_ylabel("median node accuracy")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{title}, {label}")
        paths += _save(fig, out, f"{name}_{suffix}")
    return paths


def _draw_rounds(ax: Axes, method: str, pts: Curve) -> None:
    if len(pts) == 1:  # a bound with no rounds: a level, not a curve
        ax.axhline(pts[0][1], ls="--", lw=1, label=method, color=_color(method))
        return
    rnd = [q[0] for q in pts]
    mu = np.array([q[1] for q in pts])
    sd = np.array([q[2] for q in pts])
    ax.plot(rnd, mu, marker="o", ms=3, label=method, color=_color(method))
    ax.fill_between(rnd, mu - sd, mu + sd, alpha=0.15, color=_color(method))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_bytes(ax: Axes, method: str, pts: Curve) -> None:
    pts = [q for q in pts if q[3] > 0]  # a log axis cannot place zero bytes
    if pts:
        ax.plot([q[3] / MIB for q in pts], [q[1] for q in pts], marker="o", ms=3,
                label=method, color=_color(method))


def fig3_accuracy_per_round(runs: list[SavedRun], out: Path) -> list[Path]:
    """Median node accuracy per round, one panel per partition."""
    return _per_partition(runs, out, "fig3_accuracy_per_round", "Fig. 3: accuracy per round",
                          "round (0 = local phase)", _draw_rounds)


def fig4_accuracy_vs_bytes(runs: list[SavedRun], out: Path) -> list[Path]:
    """Median node accuracy against cumulative wire bytes, all methods, one panel per partition."""
    return _per_partition(runs, out, "fig4_accuracy_vs_bytes", "Accuracy against bytes",
                          "cumulative wire bytes (MiB, log)", _draw_bytes, xscale="log")


def _legend_below(fig: Figure, axes: Any, ncol: int = 4) -> None:
    """One legend for every panel of a figure made with layout="constrained", below the
    panels: a legend inside a panel hides its points, and a label shared by several panels
    is listed once."""
    legend: dict[str, Any] = {}  # label -> handle, over every panel
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    fig.legend(list(legend.values()), list(legend), fontsize=7, loc="outside lower center",
               ncol=min(ncol, len(legend)))


def fig5_codecs(runs: list[SavedRun], out: Path) -> list[Path]:
    """Final median accuracy against bits per common sample (all in, log), one point per
    codec, mean and 95% interval over seeds; the default codec's interval shaded; per
    partition. Runs saved before nodes reported `common-samples` have no bits per sample
    and are left out (the codec table still lists them)."""
    cells = codec_cells(runs)
    paths = []
    for dataset in sorted({c.dataset for c in cells if c.bits is not None}):
        mine = [c for c in cells if c.dataset == dataset and c.bits is not None]
        partitions = ordered({c.partition for c in mine}, PARTITION_ORDER)
        fig, axes = plt.subplots(1, len(partitions), figsize=(3.6 * len(partitions), 3.6),
                                 squeeze=False, layout="constrained")
        for ax, p in zip(axes[0], partitions, strict=True):
            here = [c for c in mine if c.partition == p]
            for method in sorted({c.method for c in here}, key=label_key):
                pts = sorted((float(c.bits or 0), *_interval(c.accs), c.codec, c.is_default)
                             for c in here if c.method == method)
                color = _color(method)
                ax.errorbar([q[0] for q in pts], [q[1] for q in pts], [q[2] for q in pts],
                            marker="o", ms=4, capsize=2, label=method, color=color)
                for x, mean, half, codec, is_default in pts:
                    ax.annotate(codec, (x, mean), textcoords="offset points", xytext=(3, 4),
                                fontsize=7)
                    if is_default and half:  # the band a codec should land in
                        ax.axhspan(mean - half, mean + half, alpha=0.1, color=color)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            accs = [a for c in here for a in c.accs]
            ax.set_ylim(min(accs) - 0.02, max(accs) + 0.02)  # 2 points of margin: no false drama
            ax.set_title(p)
            ax.set_xlabel("bits per common sample, all in (log)")
        axes[0][0].set_ylabel("final median node accuracy")
        _legend_below(fig, axes[0], ncol=2)
        fig.suptitle(f"Fig. 5: accuracy against bits per sample per codec, {dataset}")
        paths += _save(fig, out, f"fig5_codecs_{dataset}")
    return paths


def main_runs(runs: list[SavedRun]) -> list[SavedRun]:
    """The runs Figs. 2-4 and 7 compare: one configuration per method and dataset. A method
    whose settings were tuned (several candidates with validation scores) shows its setting
    chosen on validation (`flower_gd.select`); any other shows the configuration with the
    default codec measured on the most partitions (a codec variant is left to the tables and
    Figs. 5 and 7), as does a method whose runs here span experiments (no setting of it is
    chosen: `flower_gd.select.mixed_experiments`); single-family fleets only."""
    pool = [r for r in runs if not r.off_default(CODEC_KEYS) and "," not in r.model]
    chosen_runs = {name for sel in select(pool).values() if len(sel["candidates"]) > 1
                   for name in sel["runs"]}
    tuned = {r.method for r in pool if r.path.name in chosen_runs}
    coverage: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in pool:
        if r.method not in tuned:
            coverage[(r.dataset, r.method)][r.label()].add(r.partition)
    chosen = {key: max(variants, key=lambda v: (len(variants[v]), -len(v)))
              for key, variants in coverage.items()}
    return [r for r in pool if r.path.name in chosen_runs if r.method in tuned] + [
        r for r in pool if r.method not in tuned and r.label() == chosen[(r.dataset, r.method)]]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (bytes, accuracy) points no other point beats: none sends at most as
    many bytes for at least the accuracy with one of the two strictly better. Cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    for i in order:
        if not front or points[i][1] > points[front[-1]][1]:
            front.append(i)
    return front


def _exchanges_knowledge(method: str) -> bool:
    """Whether a method shares what the field compares (scores or weights): `local` shares
    nothing and `central` the data itself; fig7 draws those two as levels, off the front."""
    shares = methods.REGISTRY[method].shares if method in methods.REGISTRY else frozenset()
    return bool(shares & {"scores", "weights"})


# Fig. 7's marker per payload codec: a method's codec variants share its color
CODEC_MARKERS = {"float32": "o", "float16": "p", "uint8": "^", "topk": "D", "hard4": "s",
                 "hard4p1": "P", "hard4p2r1-ac": "X", "hard": "v"}


def fig7_pareto(runs: list[SavedRun], out: Path) -> list[Path]:
    """Final median accuracy against the metered bytes of the whole run (log), one point per
    method at its chosen setting and per codec variant of it: mean over seeds, error bars
    the 95% t-interval; the Pareto front (by the means) drawn and its points ringed. The
    bounds that exchange no knowledge (`local`, `central`) are dotted levels. One panel per
    partition."""
    codecs = [r for r in runs if r.off_default(CODEC_KEYS) and "," not in r.model]
    shown = main_runs(runs) + codecs
    paths = []
    hide = shared_settings(shown)
    for name, title, mine in _experiments(shown):
        sub = [r for r in mine if r.wire_bytes > 0]
        partitions = ordered({r.partition for r in sub}, PARTITION_ORDER)
        if not partitions:
            continue
        fig, axes = plt.subplots(1, len(partitions), figsize=(3.8 * len(partitions), 4.4),
                                 squeeze=False, sharey=True, layout="constrained")
        for ax, p in zip(axes[0], partitions, strict=True):
            cells: dict[str, list[SavedRun]] = defaultdict(list)
            for r in sub:
                if r.partition == p:
                    cells[r.label(hide)].append(r)
            pts = []
            for label in sorted(cells, key=label_key):
                codec = cells[label][0].config.get("codec", "float32")
                mean, half = _interval([r.final_median for r in cells[label]])
                if not _exchanges_knowledge(cells[label][0].method):  # a bound: a level
                    ax.axhline(mean, ls=":", lw=1.2, label=label, color=_color(label))
                    continue
                x = statistics.fmean(r.wire_bytes for r in cells[label]) / MIB
                pts.append((x, mean))
                ax.errorbar(x, mean, yerr=half, fmt=CODEC_MARKERS.get(codec, "*"), ms=4,
                            capsize=2, label=label, color=_color(label))
            front = pareto_front(pts)
            ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post",
                    ls="--", lw=1, color="black", label="Pareto front")
            ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=90,
                       facecolors="none", edgecolors="black", lw=1)
            ax.set_xscale("log")
            ax.set_title(p)
            ax.set_xlabel("metered bytes of the run (MiB, log)")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("final median node accuracy")
        _legend_below(fig, axes[0])
        fig.suptitle(f"Fig. 7: accuracy against bytes, mean and 95% interval over seeds, "
                     f"{title}")
        paths += _save(fig, out, f"fig7_pareto_{name}")
    return paths


def fig6_byzantine(runs: list[SavedRun], out: Path) -> list[Path]:
    """Final median accuracy of the honest nodes against the number of Byzantine nodes, one
    line per method (and robust mix), one panel per dataset and partition: mean and 95%
    interval over seeds."""
    lines = byzantine_lines(runs)
    if not lines:
        return []
    counts = sorted({n for line in lines for n in line.by_count} | {0})
    panels = sorted({(ln.dataset, ln.model, ln.partition) for ln in lines},
                    key=lambda k: (k[0], k[1], partition_key(k[2]), k[2]))
    attacks = sorted({ln.attack for ln in lines})
    markers = "osD^v<>"
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels, strict=True):
        for line in lines:
            if (line.dataset, line.model, line.partition) != panel:
                continue
            pts = [(n, *t_interval(list(line.by_count[n].values())))
                   for n in counts if line.by_count.get(n)]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[p[2] or 0.0 for p in pts], capsize=3, color=_color(line.method),
                        marker=markers[attacks.index(line.attack) % len(markers)],
                        linestyle="--" if "robust-mix" in line.method else "-",
                        label=f"{line.method} ({line.attack})")
        ax.set_title(f"Fig. 6: {panel[0]} {panel[1]} {panel[2]}")
        ax.set_xlabel("Byzantine nodes (of the fleet)")
        ax.set_xticks(counts)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final median accuracy, honest nodes\n(mean, 95% interval)")
    _legend_below(fig, axes[0], ncol=1)
    return _save(fig, out, "fig6_byzantine")


Figure_ = Callable[[list[SavedRun], Path], list[Path]]


def _main_only(figure: Figure_) -> Figure_:
    def draw(runs: list[SavedRun], out: Path) -> list[Path]:
        return figure(main_runs(runs), out)
    draw.__doc__ = figure.__doc__
    return draw


FIGURES: dict[str, Figure_] = {
           "fig1": fig1_payload_vs_model, "fig2": _main_only(fig2_final_accuracy),
           "fig3": _main_only(fig3_accuracy_per_round),
           "fig4": _main_only(fig4_accuracy_vs_bytes), "fig5": fig5_codecs,
           "fig6": fig6_byzantine, "fig7": fig7_pareto}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("figure", choices=[*FIGURES, "all"])
    parser.add_argument("results", type=Path, help="directory of saved runs")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--include-stale", action="store_true",
                        help="draw runs made by other code too (left out by default, as in "
                             "the report)")
    args = parser.parse_args(argv)
    loaded = load_runs(args.results)
    everything = loaded if args.include_stale else [r for r in loaded if not r.stale]
    if len(everything) < len(loaded):
        print(f"left out {len(loaded) - len(everything)} run(s) made by other code "
              "(re-measure them, or --include-stale)")
    for name in FIGURES if args.figure == "all" else [args.figure]:
        # attacks and faults only in their own figure
        runs = everything if name == "fig6" else [r for r in everything if r.clean]
        for path in FIGURES[name](runs, args.out):
            print(path)


if __name__ == "__main__":
    main()
