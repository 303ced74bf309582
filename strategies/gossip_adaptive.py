"""gossip-adaptive: serverless gossip of confidence-weighted beliefs, learnt by soft-label KD."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.codecs import (
    Expect,
    InferencePayload,
    PayloadError,
    decode_sample_weights,
    encode_payload,
    payload_key,
)
from flower_gd.distill import density_ratio, hard_labels, weighted_mix
from flower_gd.method import Method, ServerRun
from flower_gd.node import Node, Timer
from flower_gd.training import train_soft
from strategies.peers import decode_peers, robust
from strategies.relay import RELAY_KEYS, PullRelay, delivered, fanout, relay_steps

BELIEF = "belief"  # snapshot array B_i: (n_common, C)
SAMPLE_WEIGHTS = "weights"  # snapshot array W_i: (n_common,)
# What a gossip-adaptive node mixes: probability beliefs with per-sample weights.
EXPECT = Expect(kind="probs", sample_weights=True)


# ======================================================================== node side
def initial_weights(confidence: np.ndarray, weighting: str) -> np.ndarray:
    """W_i per common sample from the discriminator's d_i(x) (`gossip-weighting`).

    `ratio`: W = d / (1 - d) (the density ratio p_private / p_common; push-sum tends to
    sum_i r_i B_i / sum_i r_i with r = d/(1-d)); `dlad`: W = d, whose push-sum limit is
    DLAD's per-sample target sum_i d_i B_i / sum_i d_i exactly.
    """
    if weighting == "ratio":
        return density_ratio(confidence)
    if weighting == "dlad":
        return np.clip(confidence.astype(np.float64), 0.0, 1.0)
    raise ValueError(f"gossip-weighting={weighting!r}: choose ratio or dlad")


def local_phase(node: Node, content: RecordDict | None = None) -> dict[str, float]:
    """Train M_i on PD_i and a discriminator d_i (PD_i vs X_c); B_i = softmax(M_i(X_c)/T),
    W_i from d_i on X_c (`initial_weights`)."""
    with Timer() as t:
        model, loss = node.fit_private()
        confidence, disc_loss = node.fit_discriminator()
        belief = node.soft_scores(model)
        weights = initial_weights(confidence, node.cfg.gossip_weighting)
        node.store.commit(0, model, {BELIEF: belief, SAMPLE_WEIGHTS: weights}, {"counter": 1})
    return {**node.local_phase_metrics(loss, t.seconds, belief), "disc-loss": disc_loss,
            "median-weight": float(np.median(weights))}


def push_sum_split(weights: np.ndarray, fanouts: list[int]) -> np.ndarray:
    """Push-sum: each answer delivered to p pullers left the node 1/(p + 1) of its weight
    (it keeps one share), so the fleet's total weight per sample is conserved."""
    for pullers in fanouts:
        weights = weights / (pullers + 1)
    return weights


def accumulate_rescale(weights: np.ndarray, peers: int) -> np.ndarray:
    """`accumulate` bookkeeping keeps every W_j it receives, so the fleet's weight grows
    about (1 + peers)-fold a round; every node divides by that same constant after its step.
    The mix reads only ratios of weights, which a common factor leaves as they are, and the
    weights stay in range of float32 and of a payload's largest accepted weight (1e30,
    reached after about 60 rounds unscaled)."""
    return weights / (1.0 + peers)


def share(node: Node, content: RecordDict) -> RecordDict:
    """Answer a pull with (B_i, W_i) as of the end of the previous round.

    With push-sum bookkeeping the node splits its weight mass evenly between itself and the
    nodes that pull it now (the request's fan-out), after the splits of its answers
    delivered earlier this round (the relay's receipts). Answering changes nothing on disk:
    the relay tells the node in its step which answers arrived. A Byzantine node corrupts
    the belief and keeps honest weights.
    """
    snap = node.base_snapshot()
    weights = snap.array(SAMPLE_WEIGHTS)
    if node.cfg.gossip_bookkeeping == "push-sum":
        pullers = fanout(content)
        weights = push_sum_split(weights, [*delivered(content), *([pullers] if pullers else [])])
    belief = node.outgoing_scores(snap.array(BELIEF), "probs")
    payload = InferencePayload(belief, int(snap.meta["counter"]), "probs",
                               sample_weights=weights)
    return encode_payload(payload, node.outgoing_codec)


def gossip_step(node: Node, content: RecordDict) -> dict[str, float]:
    """Mix every valid relayed (B_j, W_j) into (B_i, W_i) per sample, then distil B_i into M_i.

    With `gossip-student = fresh`, the first step distils into a newly initialised model
    (later steps continue it); otherwise into the node's local model. With push-sum, the
    node first books the splits of its answers delivered this round (the relay's receipts).

    Each payload is validated on its own: a refused one is logged and its belief never
    touches this node; if its weights alone are valid the node still takes that mass, as if
    the peer had sent this node's own belief, so push-sum neither loses nor creates weight
    (a peer whose scores are malformed moves no belief, only mass). With no valid belief
    (every pull failed, or every payload was refused) the node keeps its belief and model
    and only books its receipts and the mass it took.
    """
    with Timer() as t:
        base = node.base_snapshot()
        step_round = node.current_round
        belief = base.array(BELIEF)
        weights = base.array(SAMPLE_WEIGHTS)
        if node.cfg.gossip_bookkeeping == "push-sum":
            weights = push_sum_split(weights, delivered(content))
        counter = int(base.meta["counter"])
        peers, refused = decode_peers(node, content, belief.shape, EXPECT)
        kept = [w for w in (_mass_of(content, i, belief.shape) for i in refused) if w is not None]
        if not peers:
            weights = weights + sum(kept, np.zeros_like(weights))
            if node.cfg.gossip_bookkeeping == "accumulate":
                weights = accumulate_rescale(weights, node.cfg.gossip_peers)
            node.store.commit(step_round, None, {BELIEF: belief, SAMPLE_WEIGHTS: weights},
                              {"counter": counter}, carry_model_from=base)
            return {"peers": 0, "payload-rejected": len(refused),
                    "median-weight": float(np.median(weights)), "counter": counter,
                    "wall-s": t.seconds}
        belief, weights = weighted_mix(
            belief, weights,
            [robust(node, belief, p.scores) for p in peers] + [belief] * len(kept),
            [_weights_of(p) for p in peers] + kept)
        if node.cfg.gossip_bookkeeping == "accumulate":
            weights = accumulate_rescale(weights, node.cfg.gossip_peers)
        label_acc = node.label_accuracy(hard_labels(belief))
        if node.cfg.gossip_student == "fresh" and counter == 1:
            # the first distillation starts from a new model, as DLAD's server does: a local
            # model fitted to one or two classes can be too collapsed to learn from B_i
            model = node.new_model()
        else:
            model = base.load_model(node.new_model())
        loss = train_soft(model, node.data.common_x, belief, node.cfg.round_epochs, node.optim,
                          node.cfg.temperature, node.seed(step_round))
        if node.cfg.gossip_share == "reinfer":
            belief = node.soft_scores(model)
        node.store.commit(step_round, model, {BELIEF: belief, SAMPLE_WEIGHTS: weights},
                          {"counter": counter + 1})
    return {"train-loss": loss, "label-accuracy": label_acc, "peers": len(peers),
            "payload-rejected": len(refused), "median-weight": float(np.median(weights)),
            "counter": counter + 1, "wall-s": t.seconds}


def _weights_of(payload: InferencePayload) -> np.ndarray:
    """A decoded peer's weights (EXPECT makes the decoder refuse a payload without)."""
    assert payload.sample_weights is not None
    return payload.sample_weights


def _mass_of(content: RecordDict, index: int, shape: tuple[int, int]) -> np.ndarray | None:
    """The push-sum mass of a refused payload, if its weights alone are valid."""
    try:
        return decode_sample_weights(content, shape, payload_key(index))
    except PayloadError:
        return None


# ======================================================================== relay side
class GossipAdaptive(PullRelay):
    r"""gossip-adaptive: DLAD's per-sample adaptive weighting, without DLAD's server.

    Each node i keeps a belief B_i (a class distribution per common sample) and a weight
    W_i (per sample), initialised from its own model, B_i = softmax(M_i(x)/T), and its own
    discriminator d_i (private data vs X_c): W_i = d_i/(1 - d_i) (`gossip-weighting =
    ratio`) or W_i = d_i (`dlad`). Each round it pulls
    (B_j, W_j) from `gossip-peers` random peers and mixes per sample

    .. math:: B_i \leftarrow \frac{W_i B_i + \sum_j W_j B_j}{W_i + \sum_j W_j},
              \qquad W_i \leftarrow W_i + \sum_j W_j,

    then trains M_i for `round-epochs` on X_c with the soft-label loss
    :math:`T^2 \mathrm{KL}(B_i \,\|\, \mathrm{softmax}(M_i(x)/T))`. With push-sum
    bookkeeping (`gossip-bookkeeping`) a pulled node first splits its weight among itself
    and its pullers (the relay's delivery receipts say how many), so the fleet's weight
    mass per sample is conserved and every B_i tends to the fleet's W-weighted average
    per sample, sum_i W_i B_i / sum_i W_i, with W as initialised: with `ratio` that weights
    node i by r_i / sum_j r_j, r = d/(1-d), which is not DLAD's d_i / sum_j d_j; with
    `dlad` it is DLAD's per-sample target exactly (tests/test_push_sum.py checks both
    limits). That limit is exact under four conditions: `gossip-share = belief`,
    `robust-mix = none`, no payload refused, and the float32 codec; with `reinfer` the
    node sends its model's re-inferred list instead of the mixed belief, with `robust-mix =
    clip` each peer's belief is first clipped toward B_i (self-centered clipping, per
    sample), a refused payload's mass is kept beside the receiver's own belief, and every
    other codec rounds the weights (float16 log W: about 0.4% per share at W = 1e4; hard4
    and hard4p1: up to a factor e^(+-0.29)). `accumulate` bookkeeping keeps every
    received weight (no split) and rescales by a common factor each round
    (`accumulate_rescale`).

    The ServerApp is the relay (:class:`~strategies.relay.PullRelay`): its message types,
    fault handling (`pull-timeout`, `pull-retries`, `min-nodes`) and resume.
    """

    def __init__(self, *args: Any, bookkeeping: str = "push-sum", share: str = "belief",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bookkeeping = bookkeeping
        self.share = share

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t└── %s bookkeeping, sends its %s", self.bookkeeping, self.share)


def run(server: ServerRun) -> dict[str, Any]:
    cfg = server.cfg
    strategy = GossipAdaptive(**PullRelay.relay_options(server), peers=cfg.gossip_peers,
                              bookkeeping=cfg.gossip_bookkeeping, share=cfg.gossip_share)
    return strategy.run(server, cfg.num_server_rounds)


METHOD = Method(
    name="gossip-adaptive",
    run=run,
    steps=relay_steps(local_phase, share, gossip_step),
    shares=frozenset({"scores"}),
    reads=RELAY_KEYS | {"local-epochs", "disc-epochs", "num-server-rounds", "round-epochs",
                        "temperature", "codec", "codec-topk", "robust-mix", "clip-radius",
                        "gossip-peers", "gossip-bookkeeping", "gossip-share", "gossip-student",
                        "gossip-weighting"},
    color="#ff7f0e",
)
