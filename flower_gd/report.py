"""Tabulate finished runs as Markdown and CSV (the paper's Tables II, IV and V analogues).

Usage: ``python -m flower_gd.report RESULTS_DIR [--include-stale]`` prints the tables and
writes ``RESULTS_DIR/results.md`` and ``RESULTS_DIR/results.csv`` (one row per run).

Runs made by other code than this (a sweep not yet re-measured, or runs kept with
`reuse-stale=true`) are left out of every table and listed at the end: a mean or a paired
difference never mixes two versions of the code. ``--include-stale`` puts them in the
tables, each cell that holds one marked †.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from flower_gd.config import format_setting
from flower_gd.metering import MIB
from flower_gd.select import SELECTION, mixed_experiments, mixed_note, select, write_selection
from flower_gd.sizes import model_size_table, paper_payload_table
from flower_gd.tables import (
    SavedRun,
    accuracy_table,
    assist_table,
    bytes_table,
    byzantine_table,
    codec_table,
    fault_table,
    load_runs,
    markdown,
    model_family_table,
    paired_table,
    shared_settings,
)

COLUMNS = [
    ("method", "method"), ("dataset", "dataset"), ("partition", "partition"),
    ("model", "model"), ("seed", "seed"), ("nodes", "nodes"), ("rounds", "rounds"),
    ("local_median", "median acc. after local phase"),
    ("final_median", "final median acc."), ("final_min", "min"), ("final_max", "max"),
    ("final_val_median", "final median val. acc."),
    ("collapsed", "collapsed nodes"), ("diverged", "diverged nodes"),
    ("payload_bytes", "payload per exchange (bytes)"), ("wire_mib", "wire total (MiB)"),
    ("p2p_mib", "p2p total (MiB)"), ("wall_s", "wall (s)"),
]


def row(run: SavedRun, shared: dict[str, Any]) -> dict[str, Any]:
    """One run as a flat row (settings all runs share are said once, above the tables)."""
    s = run.summary
    local = run.local_median
    return {
        "method": run.label(shared), "dataset": run.dataset, "partition": run.partition,
        "model": s["model"], "seed": s["seed"],
        "nodes": run.config.get("num-nodes", s["num-nodes"]), "rounds": s["rounds"],
        "local_median": "–" if local is None else round(local, 4),
        "final_median": round(s["final"]["median"], 4),
        "final_min": round(s["final"]["min"], 4), "final_max": round(s["final"]["max"], 4),
        "final_val_median": round(s["final-val"]["median"], 4) if "final-val" in s else "–",
        "collapsed": s.get("collapsed-nodes", "–"), "diverged": s.get("diverged-nodes", "–"),
        "payload_bytes": int(run.bytes["payload-per-exchange"]),
        "wire_mib": round(run.wire_bytes / MIB, 3),
        "p2p_mib": round(run.bytes["p2p"] / MIB, 3), "wall_s": s["wall-s"],
    }


def local_phase_groups(runs: list[SavedRun]) -> list[str]:
    """One line per set of runs whose nodes all started from the same local-phase results."""
    groups: dict[tuple[tuple[str, str], ...], list[SavedRun]] = {}
    for run in runs:
        keys = run.summary.get("local-phase") or {}
        if keys:
            groups.setdefault(tuple(sorted((p, v["key"]) for p, v in keys.items())), []).append(run)
    lines = []
    for members in groups.values():
        if len(members) > 1:
            computed = [r.path.name for r in members
                        if any(v["reused"] < v["parts"] for v in r.summary["local-phase"].values())]
            lines.append(f"- {', '.join(r.path.name for r in members)} (computed by: "
                         f"{', '.join(computed) or 'an earlier run'})")
    return lines


def machines_note(runs: list[SavedRun]) -> str:
    """Which machines the runs ran on (summaries record the CPU since code batch 5), and a
    warning when the tables mix them: float arithmetic differs across CPUs, and through
    training a cell can move by points where its interval is wide."""
    count: dict[str, int] = {}
    for run in runs:
        machine = run.summary.get("machine") or {}
        cpu = (f"{machine['cpu']} (flags {machine.get('cpu-flags', '?')})" if machine
               else "not recorded")
        count[cpu] = count.get(cpu, 0) + 1
    said = "; ".join(f"{cpu} ({n} runs)" for cpu, n in sorted(count.items()))
    if len(count) <= 1:
        return f"Machine: {said or 'no runs'}."
    return (f"Machines: {said}. These tables mix runs of several machines (or some that did "
            "not record theirs): compare cells made on one machine, and read the intervals.")


def write_report(root: Path, with_models: bool = True, include_stale: bool = False) -> str:
    """Write results.md / results.csv under `root`; return the Markdown text.

    `with_models` adds the tables measured by serializing models and payloads;
    `include_stale` tabulates the runs made by other code too (marked †), which are
    otherwise only listed.
    """
    loaded = load_runs(root)
    stale = [r for r in loaded if r.stale]
    everything = loaded if include_stale else [r for r in loaded if not r.stale]
    shared = shared_settings(everything)
    rows = [row(r, shared) for r in everything]
    runs = [r for r in everything if r.clean]  # attacks and faults get their own tables
    said = ", ".join(format_setting(k, v) for k, v in shared.items()) or "none"
    parts = [
        f"Settings off the defaults that every run here shares: {said}.",
        machines_note(everything),
        "## Runs\n\n" + markdown([t for _, t in COLUMNS],
                                  [[str(r[k]) for k, _ in COLUMNS] for r in rows]),
        "## Final median node accuracy (Table V analogue)\n\n"
        + markdown(*accuracy_table(runs, shared)),
    ]
    selection = select(runs)
    mixed = mixed_experiments(runs)
    chosen_names = {n for sel in selection.values() for n in sel["runs"]}
    tuned = any(len(sel["candidates"]) > 1 for sel in selection.values())
    compared = [r for r in runs if r.path.name in chosen_names] if tuned else runs
    hide = {k: None for r in compared for k in r.settings} if tuned else shared
    if mixed:
        parts.append("## Methods with no setting chosen (their runs span experiments)\n\n"
                     + mixed_note(mixed) + "\n\nThey appear in the tables of every run above"
                     + (", not in those of the chosen settings below." if tuned else "."))
    if tuned or mixed:
        write_selection(root, selection, mixed)
    else:  # nothing here is chosen: an earlier report's choice would describe other runs
        for name in (SELECTION, "selection.md"):
            (Path(root) / name).unlink(missing_ok=True)
    if tuned:
        said_chosen = "\n".join(
            f"- {m}: `{sel['chosen']}` ("
            + ("the only setting that competed; validation " if len(sel["candidates"]) == 1
               else "validation ")
            + f"{next(c['val'] for c in sel['candidates'] if c['label'] == sel['chosen'])})"
            for m, sel in selection.items())
        parts.append("## Each method at its setting chosen on validation\n\n"
                     "Chosen by mean final median validation accuracy over the (partition, "
                     "seed) cells of the contest: every cell on a seed at least two "
                     "candidates ran (`flower_gd/select.py`, `selection.md`):\n\n" + said_chosen
                     + "\n\nTest accuracy of the chosen settings, every seed run (seeds "
                     "added for a chosen setting alone count here, not in the choice):\n\n"
                     + markdown(*accuracy_table(compared, hide)))
    for reference, name in (("dlad", "DLAD"), ("gossip", "paper gossip"),
                            ("gossip-adaptive", "gossip-adaptive")):
        header, body = paired_table(compared, reference, hide)
        if body:
            parts.append(f"## Paired differences against {name} (points of final median "
                         "accuracy, same seeds{})\n\n".format(
                             ", each method at its chosen setting" if tuned else "")
                         + markdown(header, body)
                         + ("\n\n‡: on some seed the two runs ran on different machines "
                            "(each computed its own local phase), so the pair shares the "
                            "split, not bit-identical local models."
                            if any("‡" in c for line in body for c in line) else ""))
    parts.append("## Bytes per exchange against the model (Tables II/IV analogue)\n\n"
                 + markdown(*bytes_table(runs, shared)))
    optional = [  # each only when some run fills it
        ("Dead nodes and lost messages", fault_table(everything, shared)),
        ("Byzantine nodes: final median accuracy of the honest nodes",
         byzantine_table(everything, shared)),
        ("Payload codecs: accuracy against bytes (Fig. 5)", codec_table(runs, shared)),
        ("Mixed fleets: accuracy per model family (Table VI analogue)",
         model_family_table(runs, shared)),
        ("Mixed fleets: the teacher assistant's effect per model family",
         assist_table(runs, shared)),
    ]
    parts += [f"## {title}\n\n" + markdown(*table) for title, table in optional if table[1]]
    if stale:
        where = ("in the tables above, each cell that holds one marked †" if include_stale
                 else "left out of every table above (`--include-stale` puts them in, "
                 "marked †)")
        parts.append(f"## Runs made by other code ({len(stale)})\n\nNot yet re-measured, or "
                     "kept with `reuse-stale=true`; their code-version differs from this "
                     f"code's (or is missing): {where}. Re-measure them (rerun the sweep that "
                     "made them) before reading them as results.\n\n"
                     + "\n".join(f"- {r.path.name}: commit "
                                  f"{str(r.config.get('code-version', {}).get('commit'))[:10]}"
                                  for r in stale))
    if shared_local := local_phase_groups(everything):
        parts.append("## Runs that started from the same local phase\n\n"
                     "Same seed and partition, bit-identical local models (computed once, "
                     "`flower_gd/local_phase.py`):\n\n" + "\n".join(shared_local))
    if with_models:
        parts.append("## The paper's payloads against what Flower sends (Table IV)\n\n"
                     + markdown(*paper_payload_table()))
        channels = {3 if r.dataset in ("cifar10", "cinic10") else 1 for r in runs}
        for ch in sorted(channels):
            parts.append(f"## Model sizes, {ch}-channel input (Table II analogue)\n\n"
                         + markdown(*model_size_table(ch)))
    text = "\n\n".join(parts) + "\n"
    (Path(root) / "results.md").write_text(text)
    with (Path(root) / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return text


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    include_stale = "--include-stale" in args
    args = [a for a in args if a != "--include-stale"]
    if len(args) != 1 or args[0].startswith("-"):
        sys.exit("usage: python -m flower_gd.report RESULTS_DIR [--include-stale]")
    print(write_report(Path(args[0]), include_stale=include_stale))


if __name__ == "__main__":
    main()
