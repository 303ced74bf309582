"""Choose a method's setting on the validation split, never on the test set.

Usage::

    python -m flower_gd.select RESULTS_DIR            # writes selection.json and selection.md
    python -m flower_gd.select RESULTS_DIR --overrides gossip-adaptive   # app.k=v ... (for make)

Every setting of a method measured under RESULTS_DIR (a label: the method and its keys off
the defaults) is scored by its mean final median *validation* accuracy over every partition
and seed of the contest (`study_cells`: every cell on a seed at least two candidates ran);
only settings measured on all of those cells compete, so no setting wins by skipping a hard
partition, and seeds added later for the chosen setting alone widen the comparison tables,
not the choice. The winner's
test accuracy is reported beside it, never used. Runs made by other code do not count, nor
runs that train on the common set's true labels (`label-source=ground-truth`, a leak), nor
runs under a condition the method is measured in rather than tuned by (CONDITION_KEYS: a
payload codec, faults, attackers and the defence against them, how long a node waits for its
peers): a codec or an attack is a result to report, never the setting chosen. Settings every
candidate shares (the sweep's data settings) are not part of the choice.

A choice is made within one experiment: the data a method learns from and the model it trains
(EXPERIMENT_KEYS: the dataset, the fleet, the splits' sizes, the model). A method whose runs
here differ in any of them (say a digits and a Fashion-MNIST study in one folder) gets no
selection: its settings would compete across experiments and its (partition, seed) cells
collide. `mixed_experiments` names the keys that differ; keep each experiment in its own
`output-dir`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from flower_gd.config import ATTACK_KEYS, CODEC_KEYS, FAULT_KEYS, load_defaults
from flower_gd.tables import (
    EXPERIMENT_KEYS,
    PARTITION_ORDER,
    ROBUST_KEYS,
    SavedRun,
    format_interval,
    load_runs,
    markdown,
    one_per_seed,
    ordered,
    shared_settings,
)

SELECTION = "selection.json"
# The conditions a method is measured under, not settings to tune: attacks, faults and the
# robust mix (what `SavedRun.clean` excludes), how its payload travels, and how long a node
# waits for its peers. A run with any of them off its default never competes (a method
# measured only so has no selection). A mixed fleet's teacher assistant (`gossip-assist`)
# is a variant of the method and competes.
CONDITION_KEYS = frozenset({*ATTACK_KEYS, *FAULT_KEYS, *ROBUST_KEYS, *CODEC_KEYS,
                            "pull-timeout", "pull-retries", "min-nodes"})


def _val(run: SavedRun) -> float | None:
    val = run.summary.get("final-val", {}).get("median")
    return None if val is None or val != val else float(val)  # NaN: no validation set


def _competing(runs: list[SavedRun]) -> dict[str, list[SavedRun]]:
    """Per method, its runs that may compete (see the module doc)."""
    of_method: dict[str, list[SavedRun]] = defaultdict(list)
    for run in runs:
        if run.summary.get("label-leak"):
            continue  # a run trained on the common set's true labels (it says so) never competes
        if run.off_default(CONDITION_KEYS):
            continue  # measured under a codec, fault or attack: reported, never chosen
        if not run.stale and _val(run) is not None:
            of_method[run.method].append(run)
    return of_method


def mixed_experiments(runs: list[SavedRun]) -> dict[str, dict[str, list[str]]]:
    """Per method whose competing runs differ in an EXPERIMENT_KEYS value: each such key and
    its values (sorted, as text). Those methods get no selection."""
    return _mixed(_competing(runs))


def _mixed(of_method: dict[str, list[SavedRun]]) -> dict[str, dict[str, list[str]]]:
    """`mixed_experiments` of runs already grouped by `_competing`."""
    defaults = load_defaults()

    def value(run: SavedRun, key: str) -> Any:
        if key == "dirichlet-alpha" and run.config.get("partition-scheme") != "dirichlet":
            return None  # alpha shapes a dirichlet partition only
        return run.config.get(key, defaults.get(key))  # a missing key is its default

    def as_number(text: str) -> tuple[int, float, str]:
        try:
            return (0, float(text), text)
        except ValueError:
            return (1, 0.0, text)

    out: dict[str, dict[str, list[str]]] = {}
    for method, mine in sorted(of_method.items()):
        differ = {key: sorted({str(value(r, key)) for r in mine}, key=as_number)
                  for key in EXPERIMENT_KEYS}
        differ = {key: values for key, values in differ.items() if len(values) > 1}
        if differ:
            out[method] = differ
    return out


def study_cells(cells: list[set[tuple[str, int]]]) -> set[tuple[str, int]]:
    """The (partition, seed) cells the candidates compete on, given each candidate's cells:
    every cell any candidate ran on a seed at least two candidates ran (with one candidate,
    all of its cells). So a candidate that skipped a partition, or a seed the others ran, is
    incomplete and cannot win, while seeds added later for the chosen setting alone (`make
    bench-cells SEEDS=3,4`) neither join the choice nor make the other candidates
    incomplete. Adding seeds for two or more settings adds them to the contest."""
    if len(cells) == 1:
        return set(cells[0])
    count: dict[int, int] = defaultdict(int)
    for mine in cells:
        for seed in {s for _, s in mine}:
            count[seed] += 1
    return {(p, s) for mine in cells for p, s in mine if count[s] >= 2}


def select(runs: list[SavedRun]) -> dict[str, Any]:
    """Per method: every candidate setting's validation score and the chosen one (methods
    whose runs span experiments are left out: `mixed_experiments`)."""
    of_method = _competing(runs)
    mixed = _mixed(of_method)
    defaults = load_defaults()
    out: dict[str, Any] = {}
    for method, mine in sorted(of_method.items()):
        if method in mixed:
            continue
        shared = shared_settings(mine)  # what every candidate has: the sweep's, not a choice
        labels: dict[str, list[SavedRun]] = defaultdict(list)
        for run in mine:
            labels[run.label(shared)].append(run)
        for group in labels.values():
            seen: dict[tuple[str, int], SavedRun] = {}
            for run in group:
                one_per_seed(seen, run, run, key=(run.partition, run.seed))
        # every key some candidate varies, with each candidate's value of it (a default
        # included): the choice stays what it was if a default changes later
        varied = sorted({k for group in labels.values() for k in group[0].settings
                         if k not in shared})
        cells = {label: {(r.partition, r.seed) for r in group} for label, group in labels.items()}
        on_cells = study_cells(list(cells.values()))
        if not any(mine >= on_cells for mine in cells.values()):
            # no candidate ran every cell of the contest (say three on two seeds of three
            # each): the most complete candidate's cells, which it alone holds in full (the
            # first in label order among equals); `selection.md` lists every candidate's cells
            on_cells = cells[max(sorted(cells), key=lambda label: len(cells[label]))]
        candidates: list[dict[str, Any]] = []
        for label, group in sorted(labels.items()):
            inside = [r for r in group if (r.partition, r.seed) in on_cells]
            vals = [_val(r) or 0.0 for r in inside]
            candidates.append({
                "label": label, "settings": {k: group[0].config.get(k, defaults.get(k))
                                             for k in varied},
                "cells": len(vals), "complete": cells[label] >= on_cells,
                # None: the candidate ran none of the contest's cells
                "val-mean": statistics.fmean(vals) if vals else None,
                "val-per-partition": {p: statistics.fmean(
                    _val(r) or 0.0 for r in inside if r.partition == p)
                    for p in ordered({r.partition for r in inside}, PARTITION_ORDER)},
                "val": format_interval(vals) if vals else "none of the contest's cells",
                # which CPUs ran the contest's runs (runs of one machine share local phases)
                "machines": dict(sorted(Counter(r.machine or "not recorded"
                                                for r in inside).items())),
            })
        eligible = [c for c in candidates if c["complete"]]
        best = max(eligible, key=lambda c: c["val-mean"])
        chosen = [r for r in labels[best["label"]] if (r.partition, r.seed) in on_cells]
        out[method] = {
            "chosen": best["label"], "settings": best["settings"],
            "on": sorted(f"{p}/s{s}" for p, s in on_cells),
            "test-of-chosen": format_interval([r.final_median for r in chosen]),
            "runs": sorted(r.path.name for r in labels[best["label"]]),
            "candidates": sorted(candidates, key=lambda c: (c["val-mean"] is None,
                                                            -(c["val-mean"] or 0.0))),
        }
    return out


def overrides(selection: dict[str, Any], method: str) -> str:
    """The chosen setting as Hydra overrides (``app.key=value ...``; the method itself and
    what every candidate shared are the caller's), for make: the keys whose chosen value is
    off today's defaults, the keys a run's name shows (a choice at a default the sweep
    would use anyway needs no override)."""
    if method not in selection:
        raise SystemExit(f"no selection for method {method!r}: run `make bench-study` first "
                         "(runs under a codec, fault, attack or the robust mix never compete: "
                         "the method needs runs at its default conditions; and a method whose "
                         "runs in one folder differ in dataset, fleet, split sizes or model "
                         "gets none: keep each experiment in its own output-dir)")
    defaults = load_defaults()
    pairs = []
    for key, value in sorted(selection[method]["settings"].items()):
        if key in defaults and str(defaults[key]) == str(value):
            continue
        value = str(value).lower() if isinstance(value, bool) else value
        pairs.append(f"app.{key}={value}")
    return " ".join(pairs)


def _machines_text(machines: dict[str, int]) -> str:
    return ", ".join(f"{m}: {n}" for m, n in machines.items()) or "none"


def mixed_note(mixed: dict[str, dict[str, list[str]]]) -> str:
    """Markdown naming each method left unchosen because its runs span experiments."""
    if not mixed:
        return ""
    lines = ["- " + method + ": " + "; ".join(k + " = " + ", ".join(v) for k, v in keys.items())
             for method, keys in mixed.items()]
    return ("No setting is chosen for these methods: their runs here differ in what defines "
            "the experiment (a choice is made within one; keep each experiment in its own "
            "output-dir):\n\n" + "\n".join(lines))


def write_selection(root: Path, selection: dict[str, Any] | None = None,
                    mixed: dict[str, dict[str, list[str]]] | None = None) -> str:
    """Write `selection.json` and `selection.md` under `root` (`selection` and `mixed`: a
    `select` and a `mixed_experiments` already made of its runs, else made here); return the
    Markdown."""
    if selection is None or mixed is None:
        runs = load_runs(root)
        selection = select(runs) if selection is None else selection
        mixed = mixed_experiments(runs) if mixed is None else mixed
    (Path(root) / SELECTION).write_text(json.dumps(selection, indent=1, sort_keys=True))
    parts = []
    for method, sel in selection.items():
        rows = [[c["label"], str(c["cells"]), c["val"], "yes" if c["complete"] else "no",
                 _machines_text(c.get("machines", {})),
                 "**chosen**" if c["label"] == sel["chosen"] else ""]
                for c in sel["candidates"]]
        machines = {m for c in sel["candidates"] for m in c.get("machines", {})}
        parts.append(
            f"### {method}\n\nChosen: `{sel['chosen']}` by mean final median validation "
            f"accuracy over {len(sel['on'])} (partition, seed) cells; its test accuracy "
            f"over the same cells: {sel['test-of-chosen']}.\n\n"
            + markdown(["setting", "cells", "validation accuracy (mean ± 95% CI)",
                        "on every cell", "ran on (CPU/flags: runs)", ""], rows)
            + ("\n\nThe candidates ran on different machines: each machine computed its own "
               "local phase, so a difference between candidates of different machines holds "
               "the machines' float noise too; read the intervals." if len(machines) > 1
               else ""))
    if mixed:
        parts.append(mixed_note(mixed))
    text = "\n\n".join(parts) + "\n"
    (Path(root) / "selection.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--overrides", metavar="METHOD",
                        help="print the chosen setting of METHOD as Hydra overrides")
    args = parser.parse_args(argv)
    if args.overrides:
        path = args.root / SELECTION
        if not path.is_file():
            sys.exit(f"{path} is missing: run `make bench-study` (or "
                     f"`python -m flower_gd.select {args.root}`) first")
        print(overrides(json.loads(path.read_text()), args.overrides))
        return
    print(write_selection(args.root))


if __name__ == "__main__":
    main()
