"""gossip-adaptive: serverless gossip of confidence-weighted beliefs, learnt by soft-label KD."""

from __future__ import annotations

from logging import INFO

import numpy as np
from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.byzantine import outgoing_codec, outgoing_scores
from flower_gd.codecs import InferencePayload, PayloadError, encode_payload
from flower_gd.distill import density_ratio, hard_labels, weighted_mix
from flower_gd.node import Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.training import train_soft
from strategies.gossip import GossipDistillation, decode_peers, robust

BELIEF = "belief"
WEIGHTS = "weights"


# ======================================================================== node side
def local_phase(node: Node) -> dict[str, float]:
    """Train M_i on PD_i and a discriminator d_i (PD_i vs X_c); B_i = softmax(M_i(X_c)/T),
    W_i = d_i / (1 - d_i) on X_c."""
    with Timer() as t:
        model, loss = node.fit_private()
        confidence, disc_loss = node.fit_discriminator()
        belief = node.soft_scores(model)
        weights = density_ratio(confidence)
        node.store.commit(0, model, {BELIEF: belief, WEIGHTS: weights}, {"counter": 1})
    return {"partition-id": node.partition_id,
            "num-examples": len(node.data.parts[node.partition_id]), "train-loss": loss,
            "disc-loss": disc_loss, "median-weight": float(np.median(weights)),
            "label-accuracy": float((hard_labels(belief) == node.data.common_y).mean()),
            "wall-s": t.seconds}


def split_weights(node: Node, weights: np.ndarray, shared: list[int]) -> np.ndarray:
    """Push-sum: each answer delivered to p pullers left the node 1/(p + 1) of its weight."""
    if node.cfg.gossip_weights != "push-sum":
        return weights
    for pullers in shared:
        weights = weights / (pullers + 1)
    return weights


def share(node: Node, pullers: int, shared_before: list[int] = ()) -> RecordDict:
    """Answer a pull with (B_i, W_i) as of the end of the previous round.

    With push-sum bookkeeping the node splits its weight mass evenly between itself and the
    `pullers` nodes that pull it now (it keeps one share), after the splits of its answers
    delivered earlier this round (`shared_before`), so the total weight over the fleet is
    conserved and beliefs converge to the fleet's weighted average per sample. Answering
    changes nothing on disk: the relay tells the node in its step which answers arrived.
    A Byzantine node corrupts the belief and keeps honest weights.
    """
    snap = node.base_snapshot()
    weights = split_weights(node, snap.array(WEIGHTS), list(shared_before))
    if node.cfg.gossip_weights == "push-sum" and pullers > 0:
        weights = weights / (pullers + 1)
    belief = outgoing_scores(node, snap.array(BELIEF), "probs")
    payload = InferencePayload(belief, int(snap.meta["counter"]), "probs", weights=weights)
    return encode_payload(payload, outgoing_codec(node))


def gossip_step(node: Node, content: RecordDict, server_round: int,
                shared: list[int] = ()) -> dict[str, float]:
    """Mix every valid relayed (B_j, W_j) into (B_i, W_i) per sample, then distil B_i into M_i.

    With `gossip-student = fresh`, the first step distils into a newly initialised model
    (later steps continue it); otherwise into the node's local model. `shared` lists the
    pullers of each of this node's answers delivered this round (push-sum splits).

    Each payload is validated on its own: an invalid one is logged and left out, and when
    every payload is invalid PayloadError is raised before any state changes. With no
    payload at all (every pull failed) the node only books its push-sum splits.
    """
    with Timer() as t:
        base = node.store.snapshot(server_round - 1)
        belief = base.array(BELIEF)
        weights = split_weights(node, base.array(WEIGHTS), list(shared))
        counter = int(base.meta["counter"])
        peers, reasons = decode_peers(node, content, belief.shape)
        without = [i for i, p in enumerate(peers) if p.weights is None]
        if without:
            reasons.append(f"{len(without)} payload(s) carry no per-sample weights: the peer "
                           "does not run gossip-adaptive")
            peers = [p for p in peers if p.weights is not None]
        if reasons and not peers:
            raise PayloadError("; ".join(reasons))
        if not peers:
            node.store.commit(server_round, None, {BELIEF: belief, WEIGHTS: weights},
                              {"counter": counter}, carry_model_from=base)
            return {"peers": 0, "median-weight": float(np.median(weights)),
                    "counter": counter, "wall-s": t.seconds}
        belief, weights = weighted_mix(belief, weights,
                                       [robust(node, belief, p.scores) for p in peers],
                                       [p.weights for p in peers])
        label_acc = float((hard_labels(belief) == node.data.common_y).mean())
        if node.cfg.gossip_student == "fresh" and counter == 1:
            # the first distillation starts from a new model, as DLAD's server does: a local
            # model fitted to one or two classes can be too collapsed to learn from B_i
            model = node.new_model()
        else:
            model = base.load_model(node.new_model())
        loss = train_soft(model, node.data.common_x, belief, node.cfg.round_epochs, node.optim,
                          node.cfg.temperature, node.seed(server_round))
        if node.cfg.gossip_share == "reinfer":
            belief = node.soft_scores(model)
        node.store.commit(server_round, model, {BELIEF: belief, WEIGHTS: weights},
                          {"counter": counter + 1})
    return {"train-loss": loss, "label-accuracy": label_acc, "peers": len(peers),
            "payload-rejected": len(reasons), "median-weight": float(np.median(weights)),
            "counter": counter + 1, "wall-s": t.seconds}


# ======================================================================== relay side
class GossipAdaptive(GossipDistillation):
    r"""gossip-adaptive: DLAD's per-sample adaptive weighting, without DLAD's server.

    Each node i keeps a belief B_i (a class distribution per common sample) and a weight
    W_i (per sample), initialised from its own model, B_i = softmax(M_i(x)/T), and its own
    discriminator d_i (private data vs X_c), W_i = d_i/(1 - d_i). Each round it pulls
    (B_j, W_j) from `peers` random peers and mixes per sample

    .. math:: B_i \leftarrow \frac{W_i B_i + \sum_j W_j B_j}{W_i + \sum_j W_j},
              \qquad W_i \leftarrow W_i + \sum_j W_j,

    then trains M_i for `round-epochs` on X_c with the soft-label loss
    :math:`T^2 \mathrm{KL}(B_i \,\|\, \mathrm{softmax}(M_i(x)/T))`. With push-sum
    bookkeeping a pulled node first splits its weight among itself and its pullers, so the
    weight mass is conserved and every B_i tends to the fleet's weighted average per sample:
    the target DLAD's server computes, reached by gossip. With `reinfer`, the node sends
    its model's re-inferred list instead of the mixed belief. With `robust-mix = clip` each
    peer's belief is first clipped toward B_i (self-centered clipping, per sample).

    The ServerApp is a relay only, exactly as for :class:`GossipDistillation`: the message
    types, the fault handling (`pull-timeout`, `pull-retries`, `min-nodes`) and resume are
    the same; the ClientApp runs this module's node steps when ``method = gossip-adaptive``.
    """

    def __init__(self, run_dir: str, num_nodes: int, topology: str = "complete", seed: int = 0,
                 recorder: RunRecorder | None = None, peers: int = 1,
                 weights: str = "push-sum", share: str = "belief", pull_timeout: float = 600.0,
                 pull_retries: int = 1, min_nodes: int = 2) -> None:
        super().__init__(run_dir, num_nodes, topology=topology, seed=seed, recorder=recorder,
                         pull_timeout=pull_timeout, pull_retries=pull_retries,
                         min_nodes=min_nodes)
        if peers < 1 or peers >= num_nodes:
            raise ValueError(f"peers={peers} must be in [1, num_nodes - 1]")
        self.peers_per_round = peers
        self.weights = weights
        self.share = share

    def summary(self) -> None:
        log(INFO, "\t├── GossipAdaptive: relay-only ServerApp, topology=%s, %s peer(s) per "
            "round, %s weights, sends %s", self.topology, self.peers_per_round, self.weights,
            self.share)
