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
isolate where a codec loses, and a sender-side one tries a remedy:
`--fill own` decodes a hard4p1 payload with the mass off the label spread like the
receiver's own belief instead of evenly; `--exact-weights` mixes with
the weights as the sender computed them, i.e. only the beliefs are quantized;
`--error-feedback` has each sender encode its belief plus what its earlier payloads failed
to carry (the residual of every payload it sent, kept by the sender: the error-feedback
remedy of compressed SGD and gossip, in which quantization errors cancel over rounds instead
of piling up hop after hop).

    python -m strategies.gossip_replay results/bench/gossip-adaptive_fashion-mnist_niid3_*_s[0-2] \
        --codec float32 --codec hard4p1 --fill-own --exact-weights
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
from flwr.app import ConfigRecord, RecordDict

from flower_gd.codecs import (
    COMPRESS_WHEN,
    PAYLOAD_FIELD,
    PAYLOAD_KEY,
    Codec,
    InferencePayload,
    decode_payload,
    deflate,
    encode_payload,
    open_payload,
    payload_record,
    seal_payload,
)
from flower_gd.config import RunConfig, upgrade
from flower_gd.distill import hard_labels, weighted_mix
from flower_gd.federation import federated_data
from flower_gd.payload_codecs.hard4 import NIBBLE, nibble_weights, unnibble_weights
from flower_gd.payload_codecs.hard4p1 import top_floor, with_top
from flower_gd.payload_codecs.hard4p2r1_ac import CONTEXTS as AC_CONTEXTS
from flower_gd.payload_codecs.hard4p2r1_ac import lloyd_levels, with_runner_up
from flower_gd.payload_codecs.range_coder import decode_fields, encode_fields
from flower_gd.provenance import CODE_VERSION_KEY

# constants and functions only: importing its METHOD would put this module in gossip-adaptive's
# code scope (flower_gd/provenance.py), and an edit here would re-measure its runs
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
    topk: int = 2  # `codec-topk` of the topk codec
    error_feedback: bool = False  # the sender adds what its last payloads failed to carry

    @property
    def name(self) -> str:
        parts = [self.codec if self.codec != "topk" else f"top-{self.topk}"]
        if self.fill != "even":
            parts.append(f"fill={self.fill}")
        if self.exact_weights:
            parts.append("exact-weights")
        if self.error_feedback:
            parts.append("error-feedback")
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
    saved = upgrade(json.loads((run_dir / "config.json").read_text()))
    cfg = RunConfig.from_mapping({k: v for k, v in saved.items() if k != CODE_VERSION_KEY})
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
            where = f"{run_dir.name}: node {row['node']} in round {row['round']}"
            if row.get("alive", "1") not in ("1", "True", "true"):
                raise ReplayError(f"{where} was down; replay a run without crashes")
            # a failed pull is retried, and the sender then splits its weight once per batch
            # of answers; a refused payload's mass is kept beside the receiver's belief; a
            # step that failed leaves no metrics: none of these is replayed
            for column in ("failed_pulls", "payload_rejected"):
                if float(row.get(column) or 0) > 0:
                    raise ReplayError(f"{where} has {column}={row[column]}; replay a run "
                                      "without failed pulls or refused payloads")
            if int(row["round"]) > 0 and not row.get("label_accuracy"):
                raise ReplayError(f"{where} reported no step; replay a run in which every "
                                  "node took every step")
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
    last = cfg.num_server_rounds
    final = [nodes / f"node-{i}" / f"r{last}" / f"{BELIEF}.npy" for i in range(n)]
    if not all(p.is_file() for p in final):
        raise ReplayError(f"{run_dir.name}: not every node has its round-{last} snapshot; "
                          "replay a finished run")
    return SavedMixing(
        cfg=cfg,
        beliefs=[np.load(p / f"{BELIEF}.npy") for p in first],
        weights=[np.load(p / f"{SAMPLE_WEIGHTS}.npy") for p in first],
        pulls={r: dict(v) for r, v in pulls.items()}, last_round=last,
        final=[np.load(p) for p in final])


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


# Each candidate: (top-probability levels, how many of the lowest levels also send their
# runner-up label). hard4p1-ac codes hard4p1's fields with the adaptive arithmetic coder of
# `flower_gd.payload_codecs.range_coder` instead of packing and deflating them; hard4p2r1's
# arithmetic-coded twin is the codec hard4p2r1-ac (`flower_gd/payload_codecs/hard4p2r1_ac.py`).
SHAPES = {"hard4p2": (4, 0), "hard4p1r": (2, 1), "hard4p2r": (4, 2), "hard4p2r1": (4, 1),
          "hard4p1": (2, 0)}
AC_SUFFIX = "-ac"
# hard4p1-ac codes its fields in the codec hard4p2r1-ac's contexts (AC_CONTEXTS): the label;
# the weight level given the label; the top level given both; the runner-up given the label.


def _shape(name: str) -> tuple[int, int, bool]:
    base, ac = (name[:-len(AC_SUFFIX)], True) if name.endswith(AC_SUFFIX) else (name, False)
    if base not in SHAPES or (base == "hard4p1") != ac:
        raise ReplayError(f"unknown candidate {name!r}: choose one of {list(CANDIDATES)}")
    return (*SHAPES[base], ac)


def ac_fields(labels: np.ndarray, weight_levels: np.ndarray, top_index: np.ndarray,
              runner: np.ndarray, sends_runner: np.ndarray) -> list[list[int]]:
    """The rows `range_coder.encode_fields` codes: label, weight level, top level, and the
    runner-up label where `sends_runner` (-1, not coded, elsewhere)."""
    return np.stack([labels, weight_levels, top_index, np.where(sends_runner, runner, -1)],
                    axis=1).astype(int).tolist()


def candidate(name: str, belief: np.ndarray, weights: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """`candidate_payload`'s decode and weights, and the sealed payload's size in bytes."""
    scores, decoded_w, record = candidate_payload(name, belief, weights)
    return scores, decoded_w, _size(record)


def candidate_payload(name: str, belief: np.ndarray, weights: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, ConfigRecord]:
    """Codec ideas not in `flower_gd.codecs`, built on hard4p1 (its labels and weight
    levels): what a receiver would decode, and the payload they would send,
    sealed as a codec seals one (hard4p1's parts, the extra parts deflated where that pays,
    the extra header values).

    `hard4p2`: the top-class probability as one of 4 Lloyd-Max levels (2 bits, not 1).
    `hard4p1r`: hard4p1, and for the samples at the lower top level their runner-up label
    (4 bits) with one runner-up probability per payload (those samples' mean).
    `hard4p2r`: both, the runner-up for the lower two of the four levels.
    `hard4p2r1`: hard4p2, the runner-up for the lowest of the four levels only.
    With `-ac` (and `hard4p1-ac`): the same decode, its fields (label, weight level, top
    level, runner-up) arithmetic-coded in contexts (`AC_CONTEXTS`) as one stream instead of
    packed and deflated (`decode_ac` decodes such a payload from its bytes alone). Needs at
    least 6 classes (the runner-up's share stays below the top).
    """
    count, runner_levels, ac = _shape(name)
    rows, c = np.arange(len(belief)), belief.shape[1]
    if c < 6:
        raise ReplayError(f"candidate {name} needs at least 6 classes, not {c}")
    content = encode_payload(InferencePayload(belief, 1, "probs", sample_weights=weights),
                             Codec("hard4p1"))
    hard4p1 = decode_payload(content, belief.shape, expect=EXPECT)
    decoded_w = hard4p1.sample_weights
    assert decoded_w is not None
    arrays, meta = open_payload(content)
    extra: dict[str, np.ndarray] = {}
    order = np.argsort(-belief, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    levels, index = lloyd_levels(belief[rows, first].astype(np.float64), count, top_floor(c))
    top = levels[index]
    if count == 4:  # the level's two bits, packed (hard4p1's one bit is the high one)
        extra["top-bit"] = np.packbits(index // 2)
        extra["top-bit-low"] = np.packbits(index % 2)
        meta["top-levels"] = [float(v) for v in levels]
    out = with_top(top, first, c)
    if (count, runner_levels) == SHAPES["hard4p1"]:
        out = hard4p1.scores  # the codec's own decode (float32), not its float64 twin
    low = index < runner_levels
    if low.any():
        meta["runner-share"] = float(belief[low, second[low]].mean())
        out[low] = with_runner_up(top[low], first[low], second[low], meta["runner-share"], c)
        labels = np.append(second[low], [0] * (int(low.sum()) % 2)).astype(np.uint8)
        extra["runner-up"] = labels[0::2] << 4 | labels[1::2]
    if ac:
        weight_levels, _ = nibble_weights(weights)
        stream = encode_fields(ac_fields(first, weight_levels, index, second, low),
                               [c, NIBBLE, count, c], AC_CONTEXTS)
        meta = {key: value for key, value in meta.items() if key != "zlib"}
        meta["codec"] = name
        return out, decoded_w, seal_payload({"stream": np.frombuffer(stream, dtype=np.uint8)},
                                            meta)
    zipped = [z for z in meta.get("zlib", []) if z not in extra]
    for part, raw in extra.items():
        packed = deflate(raw.tobytes())
        if len(packed) <= COMPRESS_WHEN * raw.nbytes:
            arrays[part] = np.frombuffer(packed, dtype=np.uint8)
            zipped.append(part)
        else:
            arrays[part] = raw
    meta["zlib"] = zipped
    meta["codec"] = name
    return out, decoded_w, seal_payload(arrays, meta)


def decode_ac(record: ConfigRecord, shape: tuple[int, int], name: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """The scores and weights an arithmetic-coded candidate payload carries, from its bytes
    and header alone (the receiver knows the shape, as for every codec, and the name)."""
    count, runner_levels, ac = _shape(name)
    if not ac:
        raise ReplayError(f"{name} is not an arithmetic-coded candidate")
    arrays, meta = open_payload(RecordDict({PAYLOAD_KEY: record}))
    n, c = shape
    fields = decode_fields(arrays["stream"].tobytes(), n, [c, NIBBLE, count, c], AC_CONTEXTS,
                           [None, None, None, lambda row: row[2] < runner_levels])
    first, weight_levels, index, second = (np.array(f, dtype=np.int64).reshape(n)
                                           for f in zip(*fields, strict=True)) \
        if n else (np.zeros(0, np.int64),) * 4
    top = np.asarray(meta["top-levels"], dtype=np.float64)[index]
    out = with_top(top, first, c)
    low = index < runner_levels
    if low.any():
        out[low] = with_runner_up(top[low], first[low], second[low], meta["runner-share"], c)
    return out, unnibble_weights(weight_levels.astype(np.uint8), meta["log-top"])


def _size(record: ConfigRecord) -> int:
    """Bytes of a payload's byte string (what the codec's framing adds is not counted)."""
    value = record[PAYLOAD_FIELD]
    assert isinstance(value, bytes)
    return len(value)


CANDIDATES = ("hard4p2", "hard4p1r", "hard4p2r", "hard4p2r1", "hard4p1-ac")


def _sent(belief: np.ndarray, weights: np.ndarray, variant: Variant
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """What a receiver decodes from a payload of (belief, weights), and its encoded size."""
    if variant.codec in CANDIDATES:
        scores, decoded_w, size = candidate(variant.codec, belief, weights)
        return scores, (weights if variant.exact_weights else decoded_w), size
    content = encode_payload(InferencePayload(belief, 1, "probs", sample_weights=weights),
                             Codec(variant.codec, topk=variant.topk))
    payload = decode_payload(content, belief.shape, expect=EXPECT)
    assert payload.sample_weights is not None
    size = _size(payload_record(content))
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
    # error feedback: what each sender's payloads have so far failed to carry of its belief
    residual = [np.zeros_like(b) for b in beliefs] if variant.error_feedback else None
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
            if residual is None or not residual[j].any():  # nothing owed: the belief as is
                b, w, size = _sent(beliefs[j], share, variant)
                if residual is not None:
                    residual[j] = beliefs[j] - b
            else:
                wanted = beliefs[j] + residual[j]
                b, w, size = _sent(as_distribution(wanted, beliefs[j]), share, variant)
                residual[j] = wanted - b
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


def as_distribution(wanted: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """`wanted` (a belief plus the sender's residual) made a distribution per row to encode:
    negative entries cut to 0 and each row renormalised; a row left with no mass is the
    belief itself (`fallback`)."""
    clipped = np.clip(wanted, 0.0, None)
    total = clipped.sum(axis=1, keepdims=True)
    out = np.where(total > 0, clipped / np.where(total > 0, total, 1.0), fallback)
    return out.astype(fallback.dtype)


def own_variant(saved: SavedMixing) -> Variant:
    """The variant the run itself ran: its codec, nothing else changed."""
    return Variant(codec=saved.cfg.codec, topk=saved.cfg.codec_topk)


def check(saved: SavedMixing, history: list[list[np.ndarray]] | None = None) -> float:
    """The largest difference between the run's saved last beliefs and the replay's under
    the run's own codec (0 up to float rounding when the replay is faithful); `history`:
    that replay, when the caller has it already."""
    if history is None:
        history, _ = replay(saved, own_variant(saved))
    return max(float(np.abs(a - b).max()) for a, b in zip(history[-1], saved.final, strict=True))


def label_accuracy(beliefs: list[np.ndarray], truth: np.ndarray) -> float:
    """Median over nodes of the share of X_c whose belief's argmax is the true class."""
    return float(np.median([(hard_labels(b) == truth).mean() for b in beliefs]))


def _columns(names: list[str]) -> dict[str, str]:
    """Short column labels: each run group's name without the tokens all groups share."""
    tokens = [name.split("_") for name in names]
    shared = set.intersection(*(set(t) for t in tokens)) if len(tokens) > 1 else set()
    return {name: "_".join(t for t in toks if t not in shared) or name
            for name, toks in zip(names, tokens, strict=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished gossip-adaptive run directories")
    parser.add_argument("--codec", action="append",
                        help=f"codecs to replay, or candidates {list(CANDIDATES)} (repeat; "
                             "the first is the reference)")
    parser.add_argument("--topk", type=int, default=2, help="k of --codec topk")
    parser.add_argument("--fill-own", action="store_true",
                        help="also replay hard4p1 with the rest filled like the receiver's belief")
    parser.add_argument("--error-feedback", action="store_true",
                        help="also replay each lossy codec with error feedback: a sender "
                             "encodes its belief plus what its earlier payloads failed to carry")
    parser.add_argument("--exact-weights", action="store_true",
                        help="also replay each lossy codec with exact weights (not the "
                             "arithmetic-coded candidates: their decode is their twin's)")
    args = parser.parse_args(argv)
    variants = []
    for codec in args.codec or ["float32", "hard4p1"]:
        variants.append(Variant(codec, topk=args.topk))
        if args.fill_own and codec in FILL_CODECS:
            variants.append(Variant(codec, "own", topk=args.topk))
        # an -ac candidate decodes as its packed twin: with exact weights it is that twin's row
        if args.exact_weights and codec != "float32" and not codec.endswith(AC_SUFFIX):
            variants.append(Variant(codec, exact_weights=True, topk=args.topk))
        if args.error_feedback and codec != "float32":
            variants.append(Variant(codec, topk=args.topk, error_feedback=True))
    from flower_gd.tables import paired_text

    # per run group (a run's name without its seed) and variant: last round's accuracy by seed
    last: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    bits: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in args.runs:
        try:
            saved = load(run)
            replays = {v: replay(saved, v) for v in dict.fromkeys([own_variant(saved), *variants])}
        except ReplayError as err:
            print(f"\n{Path(run).name}: left out: {err}")
            continue
        error = check(saved, replays[own_variant(saved)][0])
        truth = federated_data(saved.cfg, saved.cfg.num_nodes).common_y
        print(f"\n{Path(run).name}: replayed under its own codec ({saved.cfg.codec}), the last "
              f"beliefs differ from the saved ones by at most {error:.2e}")
        if error > 1e-9:
            print("  not reproduced: left out (was it made by other code?)")
            continue
        print(f"  {'round 0':28s} {label_accuracy(saved.beliefs, truth):.4f}")
        group = Path(run).name.removesuffix(f"_s{saved.cfg.seed}")
        for variant in variants:
            history, size = replays[variant]
            accs = [label_accuracy(b, truth) for b in history]
            last[(group, variant.name)][saved.cfg.seed] = accs[-1]
            bits[(group, variant.name)].append(8 * size / len(truth))
            print(f"  {variant.name:28s} {' '.join(f'{a:.4f}' for a in accs)}   "
                  f"{8 * size / len(truth):.2f} bits per sample in the payload")
    groups = list(dict.fromkeys(g for g, _ in last))
    if not groups:
        return
    label = _columns(groups)
    print(f"\nLast round's median belief label accuracy minus {variants[0].name}'s, paired by "
          "seed (points), and the payload's mean bits per common sample:\n")
    print("| variant | " + " | ".join(label[g] for g in groups) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for variant in variants[1:]:
        cells = []
        for group in groups:
            ref, got = last[(group, variants[0].name)], last[(group, variant.name)]
            diffs = [got[seed] - ref[seed] for seed in sorted(got) if seed in ref]
            mean_bits = statistics.fmean(bits[(group, variant.name)])
            cells.append(f"{paired_text(diffs)}, {mean_bits:.2f} b")
        print(f"| {variant.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
