"""Read saved runs back and compute the comparison tables (no run is ever re-executed)."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flower_gd.config import variant_parts
from flower_gd.results import SUMMARY

METHOD_ORDER = ["local", "gossip", "gossip-gt", "gossip-adaptive", "dlad", "fedavg", "central",
                "central-all"]
# methods whose nodes all evaluate one server-side model at the end
GLOBAL_MODEL_METHODS = ("dlad", "fedavg", "central", "central-all")
CODEC_ORDER = ["float32", "float16", "uint8", "topk", "hard"]
PARTITION_ORDER = ["iid", "niid1", "niid2", "niid3", "niid4"]


@dataclass(frozen=True)
class SavedRun:
    """One finished run directory: summary, resolved config and per-round per-node rows."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, str]]

    @property
    def method(self) -> str:
        """Method label: the ground-truth diagnostic is kept apart from honest gossip, and a
        codec or option variant is named after a slash (``gossip-adaptive/uint8``)."""
        return f"{self.base_method}/{self.variant}" if self.variant else self.base_method

    @property
    def base_method(self) -> str:
        """The method without its variant (codec, gossip-adaptive options)."""
        leak = self.summary.get("label-leak") or self.config.get("label-source") == "ground-truth"
        return f"{self.summary['method']}-gt" if leak else self.summary["method"]

    @property
    def variant(self) -> str:
        """Codec and option labels that differ from the defaults, e.g. "uint8" or "k2"."""
        return "/".join(variant_parts(self.config))

    @property
    def attackers(self) -> int:
        """How many Byzantine nodes the run had (0 for runs that predate the option)."""
        return int(self.config.get("byzantine-nodes", 0))

    @property
    def robust(self) -> bool:
        return self.config.get("robust-mix", "none") != "none"

    @property
    def faulty(self) -> bool:
        """Dead, slow or lossy: the run measured fault tolerance, not the method."""
        return bool(str(self.config.get("drop-nodes", "")).strip()
                    or float(self.config.get("message-loss", 0.0))
                    or str(self.config.get("slow-nodes", "")).strip())

    @property
    def clean(self) -> bool:
        """No attacker, no fault, no robust mix: a run of the comparison proper."""
        return not (self.attackers or self.robust or self.faulty)

    @property
    def codec(self) -> str:
        return str(self.config.get("codec", "float32"))

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or self.config.get("model", ""))

    @property
    def partition(self) -> str:
        scheme = self.config["partition-scheme"]
        return f"dirichlet({self.config['dirichlet-alpha']:g})" if scheme == "dirichlet" else scheme

    @property
    def dataset(self) -> str:
        return self.summary["dataset"]

    @property
    def final_median(self) -> float:
        return float(self.summary["final"]["median"])

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
        target = self.final_median - tolerance
        for _, acc, total in self.curve():
            if acc >= target:
                return total
        return self.curve()[-1][2] if self.curve() else 0


def load_runs(root: Path) -> list[SavedRun]:
    """Every finished run (a directory with summary.json) under `root`."""
    runs = []
    for path in sorted(Path(root).rglob(SUMMARY)):
        d = path.parent
        with (d / "rounds.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        runs.append(SavedRun(d, json.loads(path.read_text()),
                             json.loads((d / "config.json").read_text()), rows))
    if not runs:
        raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
    return runs


def ordered(values, order):
    """`values` in the order of `order`, unknown ones last, sorted."""
    known = [v for v in order if v in values]
    return known + sorted(v for v in values if v not in order)


def method_key(label: str) -> tuple[int, str]:
    """Sort key of a method label: METHOD_ORDER first, then its variants alphabetically."""
    base, _, variant = label.partition("/")
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else 99, variant)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def accuracy_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Table V analogue: final median node accuracy, method x partition, per dataset.

    Cells read ``mean`` or ``mean ± sd (n seeds)`` over seeds.
    """
    cells: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for run in runs:
        cells[(run.dataset, run.model, run.method, run.partition)].append(run.final_median)
    partitions = ordered({k[3] for k in cells}, PARTITION_ORDER)
    header = ["dataset", "model", "method", *partitions]
    body = []
    for dataset, model in sorted({k[:2] for k in cells}):
        methods = {k[2] for k in cells if k[:2] == (dataset, model)}
        for method in sorted(methods, key=method_key):
            line = [dataset, model, method]
            for p in partitions:
                vals = cells.get((dataset, model, method, p))
                if not vals:
                    line.append("")
                    continue
                m, sd = mean_sd(vals)
                line.append(f"{m:.4f}" if len(vals) == 1 else f"{m:.4f} ± {sd:.4f} ({len(vals)})")
            body.append(line)
    return header, body


def bytes_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Tables II/IV analogue: measured bytes of one exchange per method, against the model.

    ``payload`` is one message as sent (gossip: the relayed inference list; DLAD: one upload;
    FedAvg: one model update); ``model`` is a weights message measured in the same
    dataset's FedAvg or DLAD runs. MiB = 2^20 bytes.
    """
    model_bytes: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        w = run.summary["bytes"].get("weights-message", 0)
        if w:
            model_bytes[run.dataset].append(w)
    rows: dict[tuple[str, str], list[SavedRun]] = defaultdict(list)
    for run in runs:
        rows[(run.dataset, run.method)].append(run)
    header = ["dataset", "method", "payload per exchange (bytes)", "payload (MiB)",
              "model message (bytes)", "payload / model", "logits total (MiB)",
              "weights total (MiB)", "data total (MiB)", "total wire (MiB)",
              "bytes to reach final acc. (MiB)"]
    body = []
    for dataset, method in rows:
        group = rows[(dataset, method)]
        payload = statistics.median(r.summary["bytes"]["payload-per-exchange"] for r in group)
        model = statistics.median(model_bytes[dataset]) if model_bytes[dataset] else 0
        wire = statistics.fmean((r.summary["bytes"]["wire-up"] + r.summary["bytes"]["wire-down"])
                                for r in group)
        reach = statistics.fmean(r.bytes_to_final() for r in group)
        by_tag = [statistics.fmean(r.summary["bytes"]["by-tag"].get(t, 0) for r in group) / 2**20
                  for t in ("logits", "weights", "data")]
        body.append([dataset, method, f"{payload:.0f}", f"{payload / 2**20:.3f}",
                     f"{model:.0f}" if model else "", f"{payload / model:.3f}" if model else "",
                     *(f"{b:.2f}" for b in by_tag), f"{wire / 2**20:.2f}", f"{reach / 2**20:.2f}"])
    body.sort(key=lambda r: (r[0], method_key(r[1])))
    return header, body


def codec_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Accuracy against bytes per codec: each variant against the float32 run of the same
    method, options, dataset, model and partition (accuracy difference in points)."""
    def key(run: SavedRun) -> tuple:
        options = [p for p in variant_parts(run.config) if p not in _codec_labels(run)]
        return (run.dataset, run.model, run.base_method, "/".join(options), run.partition)

    reference = {key(r): r for r in runs if r.codec == "float32"}
    header = ["dataset", "method", "partition", "codec", "payload per exchange (bytes)",
              "x fewer than float32", "final median acc.", "vs float32 (points)"]
    body = []
    for run in runs:
        ref = reference.get(key(run))
        if ref is None or not any(r.codec != "float32" and key(r) == key(run) for r in runs):
            continue  # only methods measured with more than one codec
        payload = run.summary["bytes"]["payload-per-exchange"]
        ref_payload = ref.summary["bytes"]["payload-per-exchange"]
        body.append([run.dataset, key(run)[2] + (f"/{key(run)[3]}" if key(run)[3] else ""),
                     run.partition, "/".join(_codec_labels(run)) or "float32",
                     f"{payload:.0f}", f"{ref_payload / payload:.1f}", f"{run.final_median:.4f}",
                     f"{100 * (run.final_median - ref.final_median):+.2f}"])
    body.sort(key=lambda r: (r[0], method_key(r[1]), PARTITION_ORDER.index(r[2])
                             if r[2] in PARTITION_ORDER else 99, float(r[5])))
    return header, body


def _codec_labels(run: SavedRun) -> list[str]:
    parts = variant_parts(run.config)
    return [p for p in parts if p in CODEC_ORDER or p.startswith("topk")]


def byzantine_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Final median accuracy of the honest nodes with 0, 1, 3, ... Byzantine nodes, per
    method (and robust mix), dataset and partition; the 0 column is the clean run."""
    def key(run: SavedRun) -> tuple:
        options = [p for p in variant_parts(run.config) if not p.startswith("byz")]
        return (run.dataset, run.partition, run.base_method, "/".join(options),
                str(run.config.get("byzantine-attack", "flip")) if run.attackers else "")

    studied = {(k[0], k[1], k[2], k[3]) for k in map(key, runs)
               if any(r.attackers or r.robust for r in runs if key(r)[:4] == k[:4])}
    counts = sorted({r.attackers for r in runs if r.attackers})
    attacks = sorted({k[4] for k in map(key, runs) if k[4]})
    cells: dict[tuple, float] = {}
    for run in runs:
        if run.faulty or key(run)[:4] not in studied:
            continue
        k = key(run)
        for attack in ([k[4]] if k[4] else attacks):  # a clean run is every attack's 0
            cells[(*k[:4], attack, run.attackers)] = run.final_median
    header = ["dataset", "partition", "method", "attack",
              *(f"{n} attacker(s)" for n in [0, *counts])]
    body = []
    for dataset, partition, method, options, attack in sorted(
            {(*k[:4], k[4]) for k in cells},
            key=lambda k: (k[0], PARTITION_ORDER.index(k[1]) if k[1] in PARTITION_ORDER else 99,
                           method_key(k[2] + (f"/{k[3]}" if k[3] else "")), k[4])):
        label = method + (f"/{options}" if options else "")
        line = [dataset, partition, label, attack]
        for n in [0, *counts]:
            v = cells.get((dataset, partition, method, options, attack, n))
            line.append("" if v is None else f"{v:.4f}")
        body.append(line)
    return header, body


FAULT_PREFIXES = ("drop", "loss", "slow")


def fault_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Each method without faults and under each fault setting: final median accuracy of
    the nodes alive at the end, nodes alive, failed pulls, lost messages, wire MiB."""
    def split(run: SavedRun) -> tuple[tuple, str]:
        parts = variant_parts(run.config)
        fault = "/".join(p for p in parts if p.startswith(FAULT_PREFIXES)) or "none"
        options = "/".join(p for p in parts if not p.startswith(FAULT_PREFIXES))
        return (run.dataset, run.partition, run.base_method, options), fault

    studied = {split(r)[0] for r in runs if r.faulty}
    header = ["dataset", "partition", "method", "faults", "final median acc.", "alive at end",
              "failed pulls", "lost messages", "wire (MiB)"]
    body = []
    for run in runs:
        key, fault = split(run)
        if key not in studied or run.attackers:
            continue
        faults = run.summary.get("faults", {})
        alive = faults.get("alive-per-round", {}).get(str(run.summary["rounds"]), [])
        wire = run.summary["bytes"]["wire-up"] + run.summary["bytes"]["wire-down"]
        body.append([key[0], key[1], key[2] + (f"/{key[3]}" if key[3] else ""), fault,
                     f"{run.final_median:.4f}", str(len(alive)),
                     str(run.summary.get("failed-pulls", 0)), str(faults.get("lost-messages", 0)),
                     f"{wire / 2**20:.2f}"])
    body.sort(key=lambda r: (r[0], r[1], method_key(r[2]), r[3] != "none", r[3]))
    return header, body


def model_family_table(runs: list[SavedRun]) -> tuple[list[str], list[list[str]]]:
    """Table VI analogue: final median accuracy per model family, for mixed fleets.

    A method that ends with one global model (DLAD) gives every node that model, whatever
    the node's own family: its row names the global model instead.
    """
    mixed = [r for r in runs if "," in r.model]
    header = ["dataset", "fleet", "method", "partition", "family", "nodes",
              "final median acc.", "fleet median acc."]
    body = []
    for run in mixed:
        last = max(int(r["round"]) for r in run.rows)
        by_family: dict[str, list[float]] = defaultdict(list)
        global_model = run.base_method in GLOBAL_MODEL_METHODS
        for r in run.rows:
            if int(r["round"]) == last and r["accuracy"] not in ("", None):
                family = f"global {run.model.split(',')[0]}" if global_model else r["model"]
                by_family[family].append(float(r["accuracy"]))
        for family in sorted(by_family):
            accs = by_family[family]
            body.append([run.dataset, run.model.replace(",", "+"), run.method, run.partition,
                         family, str(len(accs)), f"{statistics.median(accs):.4f}",
                         f"{run.final_median:.4f}"])
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def model_size_table(in_channels: int = 3, num_classes: int = 10) -> tuple[list[str], list[list[str]]]:
    """Table II analogue: parameters and the bytes Flower sends for each model family.

    Bytes are measured by serializing the model's ArrayRecord into Flower's object tree,
    exactly as the meter sizes a weights message's content. Flower stores identical chunks
    once, and a fresh model has many identical BatchNorm constants, so the floats are first
    replaced by random values, as in a trained model.
    """
    import torch
    from flwr.app import ArrayRecord

    from flower_gd.metering import object_nbytes
    from flower_gd.models import build_model, count_parameters

    header = ["model", "input channels", "parameters", "serialized bytes", "MiB"]
    body = []
    for name in ("cnn", "mobilenet_v3_small", "resnet18", "densenet121"):
        model = build_model(name, in_channels, num_classes)
        generator = torch.Generator().manual_seed(0)
        state = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
        nbytes = object_nbytes(ArrayRecord(state))
        body.append([name, str(in_channels), f"{count_parameters(model):,}", str(nbytes),
                     f"{nbytes / 2**20:.2f}"])
    return header, body


# Common-set sizes of the paper's datasets (80% of the training set) and the payload sizes
# the paper reports for them, in its "MiB" (sys.getsizeof of per-row Python objects).
PAPER_PAYLOADS = {"MNIST": (48_000, 3.46), "CIFAR-10": (40_000, 2.88), "CINIC-10": (72_000, 5.18)}


def paper_payload_table(num_classes: int = 10) -> tuple[list[str], list[list[str]]]:
    """Table IV as published against what Flower sends for the same inference list.

    Each payload is encoded by the project's codec into a Flower message and sized by the
    meter, as a real exchange would be.
    """
    import numpy as np
    from flwr.app import Message

    from flower_gd.codecs import Codec, InferencePayload, encode_payload
    from flower_gd.metering import message_nbytes

    _act_as_serverapp()
    header = ["dataset", "common samples", "published (\"MiB\")", "float32 data (bytes)",
              "Flower message (bytes)", "Flower message (MiB)"]
    body = []
    for name, (n, published) in PAPER_PAYLOADS.items():
        scores = np.full((n, num_classes), 1.0 / num_classes, dtype=np.float32)
        # raw float32, the paper's format (a constant array would otherwise deflate)
        content = encode_payload(InferencePayload(scores, 1, "probs"), Codec(compress=False))
        message = Message(content=content, dst_node_id=2, message_type="train.gossip")
        nbytes = message_nbytes(message)
        body.append([name, str(n), f"{published:.2f}", str(scores.nbytes), str(nbytes),
                     f"{nbytes / 2**20:.3f}"])
    return header, body


def _act_as_serverapp() -> None:
    """Flower stamps new messages with the running task's identity; a standalone report
    (no running app) builds its sizing messages as a ServerApp would."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018  (raises when no task runs in this process)
    except RuntimeError:
        TaskIdentity.run_id, TaskIdentity.task_id = 0, 0
        TaskIdentity.node_id = SUPERLINK_NODE_ID
