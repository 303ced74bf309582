"""Replay a finished gossip-adaptive run's belief mixing under another codec, without training.

With `gossip-share = belief` a gossip-adaptive node's belief B_i and weights W_i move only by
mixing: its model learns from B_i but never feeds back into it. So given every node's
round-0 belief and weights (the `r0` snapshot under the run's `nodes/`) and who pulled
whom in each round (the meter's `p2p` rows in `messages.csv`, one per relayed payload, in
the order the receiver got them), every later belief is a function of the codec alone. This
module recomputes those beliefs with any codec, in seconds instead of a run's minutes, and
reports each round's label accuracy of the beliefs on X_c (the share of common samples
whose argmax is the true class: what the students are taught, scored against labels no
method reads). It is a screen for codec ideas (issue 14's bytes toward the floor), not a
result: a codec worth having is then run for real, with seeds.

The replay is checked, not trusted: replayed under the run's own codec, every node's last
belief must equal the one the run saved (`check`). Runs outside the conditions that make the
belief a function of the codec alone are refused: `gossip-share = reinfer`, `robust-mix =
clip` (it reads the receiver's belief, so it is replayable, but not implemented here),
Byzantine nodes, lost messages and crashed nodes.

Besides the codecs, `CANDIDATES` are codec ideas (see `candidate`) replayed without a codec
of their own, their sizes estimated. Two receiver-side variants, which send the same bytes,
isolate where a codec loses:
`--fill own` decodes a hard4p1 payload with the mass off the label spread like the
receiver's own belief instead of evenly; `--exact-weights` mixes with
the weights as the sender computed them, i.e. only the beliefs are quantized.

    python -m strategies.gossip_replay results/bench/gossip-adaptive_fashion-mnist_niid3_*_s[0-2] \
        --codec float32 --codec hard4p1 --fill even --fill own
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flower_gd.codecs import (
    Codec,
    InferencePayload,
    decode_payload,
    deflate,
    encode_payload,
    top_floor,
)
from flower_gd.config import RunConfig
from flower_gd.distill import hard_labels, weighted_mix
from flower_gd.federation import federated_data
from strategies.gossip_adaptive import (
    BELIEF,
    EXPECT,
    SAMPLE_WEIGHTS,
    accumulate_rescale,
    push_sum_split,
)

# Codecs that decode the label's mass and spread the rest evenly (hard and hard4 decode one-hot).
FILL_CODECS = ("hard4p1",)
FILLS = ("even", "own")


class ReplayError(ValueError):
    """A run the replay cannot reproduce; the message says why and what would."""


@dataclass(frozen=True)
class Variant:
    """What the replay changes: the codec, how a label payload's rest is filled, and
    whether weights travel exactly."""

    codec: str = "float32"
    fill: str = "even"
    exact_weights: bool = False

    @property
    def name(self) -> str:
        parts = [self.codec]
        if self.fill != "even":
            parts.append(f"fill={self.fill}")
        if self.exact_weights:
            parts.append("exact-weights")
        return " ".join(parts)


@dataclass(frozen=True)
class SavedMixing:
    """What a run's beliefs depend on: the nodes' starting (B, W) and the pull graph."""

    cfg: RunConfig
    beliefs: list[np.ndarray]  # per partition, (n_common, C)
    weights: list[np.ndarray]  # per partition, (n_common,)
    pulls: dict[int, dict[int, list[int]]]  # round -> receiver -> sources, partition ids
    last_round: int
    final: list[np.ndarray]  # each node's saved belief after `last_round`


def _config(run_dir: Path) -> RunConfig:
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = RunConfig.from_mapping({k: v for k, v in saved.items() if k != "code-version"})
    if cfg.method != "gossip-adaptive":
        raise ReplayError(f"{run_dir.name}: method={cfg.method}; only gossip-adaptive runs "
                          "are replayed")
    refused = {"gossip-share": (cfg.gossip_share, "belief"),
               "robust-mix": (cfg.robust_mix, "none"),
               "byzantine-nodes": (cfg.byzantine_nodes, 0),
               "message-loss": (cfg.message_loss, 0.0)}
    bad = {k: v for k, (v, ok) in refused.items() if v != ok}
    if bad:
        raise ReplayError(f"{run_dir.name}: {bad}: with these a belief is not a function of "
                          "the codec alone; replay a run with " +
                          ", ".join(f"{k}={ok}" for k, (_, ok) in refused.items()))
    return cfg


def load(run_dir: str | Path) -> SavedMixing:
    """Read a finished run's starting beliefs, pull graph and final beliefs.

    Raises
    ------
    ReplayError
        Not a finished gossip-adaptive run with its node snapshots, or one whose settings
        make beliefs depend on more than the codec.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise ReplayError(f"{run_dir}: no summary.json; replay a finished run")
    cfg = _config(run_dir)
    partition: dict[int, int] = {}
    with open(run_dir / "rounds.csv", newline="") as f:
        for row in csv.DictReader(f):
            partition[int(row["node_id"])] = int(row["node"])
            if row.get("alive", "1") not in ("1", "True", "true"):
                raise ReplayError(f"{run_dir.name}: node {row['node']} was down in round "
                                  f"{row['round']}; replay a run without crashes")
    pulls: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    with open(run_dir / "messages.csv", newline="") as f:
        for row in csv.DictReader(f):
            if (row["kind"] == "p2p" and row["direction"] == "down"
                    and row["tag"] == "scores" and int(row["round"]) > 0):
                receiver, source = partition[int(row["node_id"])], partition[int(row["peer_id"])]
                pulls[int(row["round"])][receiver].append(source)
    nodes = run_dir / "nodes"
    n = cfg.num_nodes
    first = [nodes / f"node-{i}" / "r0" for i in range(n)]
    missing = [str(p) for p in first if not (p / f"{BELIEF}.npy").is_file()]
    if missing:
        raise ReplayError(f"{run_dir.name}: round-0 snapshots missing ({missing[:2]}...): "
                          "the replay needs the run's nodes/ directory, which is not "
                          "committed; rerun the cell on this machine")
    last = max(int(p.name[1:]) for p in (nodes / "node-0").glob("r[0-9]*"))
    return SavedMixing(
        cfg=cfg,
        beliefs=[np.load(p / f"{BELIEF}.npy") for p in first],
        weights=[np.load(p / f"{SAMPLE_WEIGHTS}.npy") for p in first],
        pulls={r: dict(v) for r, v in pulls.items()}, last_round=last,
        final=[np.load(nodes / f"node-{i}" / f"r{last}" / f"{BELIEF}.npy") for i in range(n)])


def fill_like(decoded: np.ndarray, own: np.ndarray) -> np.ndarray:
    """A label payload's decode with the mass off each sample's label spread in proportion
    to `own` belief on the other classes (evenly where `own` has none there)."""
    rows = np.arange(len(decoded))
    label = decoded.argmax(axis=1)
    top = decoded[rows, label]
    rest = np.asarray(own, dtype=np.float64).copy()
    rest[rows, label] = 0.0
    total = rest.sum(axis=1, keepdims=True)
    even = np.ones_like(rest)
    even[rows, label] = 0.0
    even /= even.sum(axis=1, keepdims=True)
    rest = np.where(total > 0, rest / np.where(total > 0, total, 1.0), even)
    out = rest * (1.0 - top)[:, None]
    out[rows, label] = top
    return out


def lloyd_levels(top: np.ndarray, count: int, floor: float, iterations: int = 50
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A `count`-level Lloyd-Max codebook of top-class probabilities (each level in [floor,
    1]), and each sample's level index. With count=2 it is hard4p1's codebook."""
    levels = np.clip(np.quantile(top, (np.arange(count) + 0.5) / count), floor, 1.0)
    for _ in range(iterations):
        index = np.searchsorted((levels[1:] + levels[:-1]) / 2, top)
        new = np.clip([top[index == k].mean() if (index == k).any() else levels[k]
                       for k in range(count)], floor, 1.0)
        if np.array_equal(new, levels):
            break
        levels = new
    return levels, np.searchsorted((levels[1:] + levels[:-1]) / 2, top)


def candidate(name: str, belief: np.ndarray, weights: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Codec ideas not in `flower_gd.codecs`, built on hard4p1 (its labels and weight
    levels): what a receiver would decode, and the payload's size estimated as hard4p1's
    plus the extra parts deflated (8 bytes for each extra float of the header).

    `hard4p2`: the top-class probability as one of 4 Lloyd-Max levels (2 bits, not 1).
    `hard4p1r`: hard4p1, and for the samples at the lower top level their runner-up label
    (4 bits) with one runner-up probability per payload (those samples' mean).
    `hard4p2r`: both.
    """
    scores, decoded_w, size = _sent(belief, weights, Variant("hard4p1"))
    rows, c = np.arange(len(belief)), belief.shape[1]
    order = np.argsort(-belief, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    count = 4 if name in ("hard4p2", "hard4p2r") else 2
    levels, index = lloyd_levels(belief[rows, first].astype(np.float64), count, top_floor(c))
    top = levels[index]
    if count == 4:  # the second bit of each sample's level, packed
        size += len(deflate(np.packbits(index % 2).tobytes())) + 16
    out = np.repeat(((1.0 - top) / (c - 1))[:, None], c, axis=1)
    out[rows, first] = top
    if name in ("hard4p1r", "hard4p2r"):
        low = index < count // 2
        if low.any():
            share = np.minimum(float(belief[low, second[low]].mean()), 0.999 * top[low])
            share = np.minimum(share, 1.0 - top[low])
            out[low] = ((1.0 - top[low] - share) / (c - 2))[:, None]
            out[low, first[low]] = top[low]
            out[low, second[low]] = share
            labels = np.append(second[low], [0] * (int(low.sum()) % 2)).astype(np.uint8)
            size += len(deflate((labels[0::2] << 4 | labels[1::2]).tobytes())) + 8
    return out, decoded_w, size


CANDIDATES = ("hard4p2", "hard4p1r", "hard4p2r")


def _sent(belief: np.ndarray, weights: np.ndarray, variant: Variant
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """What a receiver decodes from a payload of (belief, weights), and its encoded size."""
    if variant.codec in CANDIDATES:
        scores, decoded_w, size = candidate(variant.codec, belief, weights)
        return scores, (weights if variant.exact_weights else decoded_w), size
    content = encode_payload(InferencePayload(belief, 1, "probs", sample_weights=weights),
                             Codec(variant.codec))
    payload = decode_payload(content, belief.shape, expect=EXPECT)
    assert payload.sample_weights is not None
    size = sum(len(v) for rec in content.config_records.values() for v in rec.values()
               if isinstance(v, bytes))
    return payload.scores, (weights if variant.exact_weights else payload.sample_weights), size


def replay(saved: SavedMixing, variant: Variant) -> tuple[list[list[np.ndarray]], float]:
    """Every node's belief after each round (index 0: round 1) under `variant`, and the
    mean payload size in bytes (the payload's byte string; no Flower framing)."""
    if variant.fill not in FILLS:
        raise ReplayError(f"fill={variant.fill!r}: choose one of {list(FILLS)}")
    if variant.fill != "even" and variant.codec not in FILL_CODECS:
        raise ReplayError(f"fill={variant.fill} changes only {list(FILL_CODECS)} payloads, not "
                          f"{variant.codec}'s")
    cfg = saved.cfg
    beliefs = [b.copy() for b in saved.beliefs]
    weights = [w.copy() for w in saved.weights]
    history, sizes = [], []
    for server_round in range(1, saved.last_round + 1):
        pulls = saved.pulls.get(server_round, {})
        fanout = np.bincount([s for srcs in pulls.values() for s in srcs],
                             minlength=len(beliefs))
        sent = {}
        for j, pullers in enumerate(fanout):
            if pullers == 0:
                continue
            share = weights[j]
            if cfg.gossip_bookkeeping == "push-sum":
                share = push_sum_split(share, [int(pullers)])
                weights[j] = share  # the sender books its delivered answers in its step
            b, w, size = _sent(beliefs[j], share, variant)
            sent[j] = (b, w)
            sizes.append(size)
        mixed = []
        for i in range(len(beliefs)):
            sources = pulls.get(i, [])
            if not sources:
                mixed.append((beliefs[i], weights[i]))
                continue
            peers = [sent[j][0] if variant.fill == "even" else fill_like(sent[j][0], beliefs[i])
                     for j in sources]
            mixed.append(weighted_mix(beliefs[i], weights[i], peers,
                                      [sent[j][1] for j in sources]))
        beliefs = [b for b, _ in mixed]
        weights = [w for _, w in mixed]
        if cfg.gossip_bookkeeping == "accumulate":
            weights = [accumulate_rescale(w, cfg.gossip_peers) for w in weights]
        history.append([b.copy() for b in beliefs])
    return history, float(np.mean(sizes)) if sizes else 0.0


def check(saved: SavedMixing) -> float:
    """The largest difference between the run's saved last beliefs and the replay's under
    the run's own codec (0 up to float rounding when the replay is faithful)."""
    history, _ = replay(saved, Variant(codec=saved.cfg.codec))
    return max(float(np.abs(a - b).max()) for a, b in zip(history[-1], saved.final, strict=True))


def label_accuracy(beliefs: list[np.ndarray], truth: np.ndarray) -> float:
    """Median over nodes of the share of X_c whose belief's argmax is the true class."""
    return float(np.median([(hard_labels(b) == truth).mean() for b in beliefs]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished gossip-adaptive run directories")
    parser.add_argument("--codec", action="append",
                        help=f"codecs to replay, or candidates {list(CANDIDATES)} (repeat)")
    parser.add_argument("--fill", action="append", choices=FILLS,
                        help="hard4p1 payloads' fill: even (the codec's) or own (repeat)")
    parser.add_argument("--exact-weights", action="store_true",
                        help="also replay each lossy codec with exact weights")
    args = parser.parse_args(argv)
    codecs = args.codec or ["float32", "hard4p1"]
    variants = []
    for codec in codecs:
        for fill in args.fill or ["even"]:
            if fill == "even" or codec in FILL_CODECS:
                variants.append(Variant(codec, fill))
        if args.exact_weights and codec != "float32":
            variants.append(Variant(codec, "even", exact_weights=True))
    from flower_gd.tables import paired_text

    last: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    bits: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in args.runs:
        saved = load(run)
        truth = federated_data(saved.cfg, saved.cfg.num_nodes).common_y
        error = check(saved)
        print(f"\n{Path(run).name}: replayed under its own codec ({saved.cfg.codec}), the last "
              f"beliefs differ from the saved ones by at most {error:.2e}")
        if error > 1e-9:
            print("  not reproduced: left out (was it made by other code, or with faults?)")
            continue
        print(f"  {'round 0':28s} {label_accuracy(saved.beliefs, truth):.4f}")
        part = saved.cfg.partition_scheme
        for variant in variants:
            history, size = replay(saved, variant)
            accs = [label_accuracy(b, truth) for b in history]
            last[(variant.name, part)][saved.cfg.seed] = accs[-1]
            bits[(variant.name, part)].append(8 * size / len(truth))
            print(f"  {variant.name:28s} {' '.join(f'{a:.4f}' for a in accs)}   "
                  f"{8 * size / len(truth):.2f} bits per sample in the payload")
    parts = list(dict.fromkeys(p for _, p in last))
    print(f"\nLast round's median belief label accuracy minus {variants[0].name}'s, paired by "
          "seed (points), and the payload's mean bits per common sample:\n")
    print("| variant | " + " | ".join(parts) + " |")
    print("|---" * (len(parts) + 1) + "|")
    for variant in variants[1:]:
        cells = []
        for part in parts:
            ref, got = last[(variants[0].name, part)], last[(variant.name, part)]
            diffs = [got[seed] - ref[seed] for seed in sorted(got) if seed in ref]
            mean_bits = statistics.fmean(bits[(variant.name, part)])
            cells.append(f"{paired_text(diffs)}, {mean_bits:.2f} b")
        print(f"| {variant.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
