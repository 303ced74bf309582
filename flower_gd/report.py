"""Tabulate finished runs (their summary.json files) as Markdown and CSV.

Usage: ``python -m flower_gd.report RESULTS_DIR`` prints the table and writes
``RESULTS_DIR/results.md`` and ``RESULTS_DIR/results.csv``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from flower_gd.results import MIB, SUMMARY

COLUMNS = [
    ("method", "method"), ("dataset", "dataset"), ("partition", "partition"),
    ("labels", "label source"), ("model", "model"), ("seed", "seed"), ("nodes", "nodes"),
    ("rounds", "rounds"), ("local_median", "median acc. after local phase"),
    ("final_median", "final median acc."), ("final_min", "min"), ("final_max", "max"),
    ("payload_bytes", "payload per exchange (bytes)"), ("wire_mib", "wire total (MiB)"),
    ("p2p_mib", "p2p total (MiB)"), ("wall_s", "wall (s)"),
]


def load_summaries(root: Path) -> list[dict[str, Any]]:
    """Every finished run under `root`, with its resolved config."""
    runs = []
    for path in sorted(Path(root).rglob(SUMMARY)):
        summary = json.loads(path.read_text())
        summary["config"] = json.loads((path.parent / "config.json").read_text())
        summary["run-dir"] = str(path.parent)
        runs.append(summary)
    return runs


def row(summary: dict[str, Any]) -> dict[str, Any]:
    cfg = summary["config"]
    per_round = summary["median-accuracy-per-round"]
    scheme = cfg["partition-scheme"]
    if scheme == "dirichlet":
        scheme = f"dirichlet({cfg['dirichlet-alpha']:g})"
    return {
        "method": summary["method"], "dataset": summary["dataset"], "partition": scheme,
        "labels": ("ground truth (LEAK)" if summary.get("label-leak") else "mixed"),
        "model": summary["model"], "seed": summary["seed"], "nodes": summary["num-nodes"],
        "rounds": summary["rounds"], "local_median": round(per_round.get("0", float("nan")), 4),
        "final_median": round(summary["final"]["median"], 4),
        "final_min": round(summary["final"]["min"], 4),
        "final_max": round(summary["final"]["max"], 4),
        "payload_bytes": int(summary["bytes"]["payload-per-exchange"]),
        "wire_mib": round((summary["bytes"]["wire-up"] + summary["bytes"]["wire-down"]) / MIB, 3),
        "p2p_mib": round(summary["bytes"]["p2p"] / MIB, 3),
        "wall_s": summary["wall-s"],
    }


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(str(r[key]) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_report(root: Path) -> str:
    """Write results.md / results.csv under `root`; return the Markdown table."""
    rows = [row(s) for s in load_summaries(root)]
    if not rows:
        raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
    table = to_markdown(rows)
    (Path(root) / "results.md").write_text(table + "\n")
    with (Path(root) / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return table


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m flower_gd.report RESULTS_DIR")
    print(write_report(Path(args[0])))


if __name__ == "__main__":
    main()
