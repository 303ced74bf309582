"""gossip-adaptive: serverless gossip of confidence-weighted beliefs, learnt by soft-label KD."""

from __future__ import annotations

from logging import INFO

import numpy as np
from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.codecs import InferencePayload, PayloadError, count_payloads, decode_payload
from flower_gd.codecs import encode_payload, payload_keys
from flower_gd.distill import density_ratio, hard_labels, weighted_mix
from flower_gd.node import Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.training import train_soft
from strategies.gossip import GossipDistillation

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
        node.store.save_model(model)
        node.store.save_array(BELIEF, belief)
        node.store.save_array(WEIGHTS, weights)
        node.store.save_meta({"counter": 1, "round": 0})
    return {"partition-id": node.partition_id,
            "num-examples": len(node.data.parts[node.partition_id]), "train-loss": loss,
            "disc-loss": disc_loss, "median-weight": float(np.median(weights)),
            "label-accuracy": float((hard_labels(belief) == node.data.common_y).mean()),
            "wall-s": t.seconds}


def share(node: Node, pullers: int) -> RecordDict:
    """Answer a pull with (B_i, W_i).

    With push-sum bookkeeping the node splits its weight mass evenly between itself and the
    `pullers` nodes that pull it this round (it keeps one share), so the total weight over
    the fleet is conserved and beliefs converge to the fleet's weighted average per sample.
    """
    belief = node.store.load_array(BELIEF)
    weights = node.store.load_array(WEIGHTS)
    meta = node.store.load_meta()
    if node.cfg.gossip_weights == "push-sum" and pullers > 0:
        weights = weights / (pullers + 1)
        node.store.save_array(WEIGHTS, weights)
    payload = InferencePayload(belief, int(meta["counter"]), "probs", weights=weights)
    return encode_payload(payload, node.codec)


def gossip_step(node: Node, content: RecordDict, server_round: int) -> dict[str, float]:
    """Mix every relayed (B_j, W_j) into (B_i, W_i) per sample, then distil B_i into M_i.

    With `gossip-student = fresh`, the first step distils into a newly initialised model
    (later steps continue it); otherwise into the node's local model.

    Every payload is validated before any state changes: a bad one raises PayloadError and
    the node keeps its model, belief and weights.
    """
    with Timer() as t:
        belief = node.store.load_array(BELIEF)
        weights = node.store.load_array(WEIGHTS)
        meta = node.store.load_meta()
        peers = []
        for i in range(count_payloads(content)):
            key, meta_key = payload_keys(i)
            peer = decode_payload(content, belief.shape, key, meta_key)
            if peer.weights is None:
                raise PayloadError(f"payload {i} carries no per-sample weights: the peer does "
                                   "not run gossip-adaptive")
            peers.append(peer)
        if not peers:
            raise PayloadError("the gossip message carries no payload")
        belief, weights = weighted_mix(belief, weights, [p.scores for p in peers],
                                       [p.weights for p in peers])
        label_acc = float((hard_labels(belief) == node.data.common_y).mean())
        if node.cfg.gossip_student == "fresh" and int(meta["counter"]) == 1:
            # the first distillation starts from a new model, as DLAD's server does: a local
            # model fitted to one or two classes can be too collapsed to learn from B_i
            model = node.new_model()
        else:
            model = node.load_model()
        loss = train_soft(model, node.data.common_x, belief, node.cfg.round_epochs, node.optim,
                          node.cfg.temperature, node.seed(server_round))
        if node.cfg.gossip_share == "reinfer":
            belief = node.soft_scores(model)
        node.store.save_model(model)
        node.store.save_array(BELIEF, belief)
        node.store.save_array(WEIGHTS, weights)
        node.store.save_meta({"counter": int(meta["counter"]) + 1, "round": server_round})
    return {"train-loss": loss, "label-accuracy": label_acc, "peers": len(peers),
            "median-weight": float(np.median(weights)), "counter": int(meta["counter"]) + 1,
            "wall-s": t.seconds}


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
    its model's re-inferred list instead of the mixed belief.

    The ServerApp is a relay only, exactly as for :class:`GossipDistillation`: the message
    types are the same; the ClientApp runs this module's node steps when
    ``method = gossip-adaptive``.
    """

    def __init__(self, run_dir: str, num_nodes: int, topology: str = "complete", seed: int = 0,
                 recorder: RunRecorder | None = None, peers: int = 1,
                 weights: str = "push-sum", share: str = "belief") -> None:
        super().__init__(run_dir, num_nodes, topology=topology, seed=seed, recorder=recorder)
        if peers < 1 or peers >= num_nodes:
            raise ValueError(f"peers={peers} must be in [1, num_nodes - 1]")
        self.peers_per_round = peers
        self.weights = weights
        self.share = share

    def summary(self) -> None:
        log(INFO, "\t├── GossipAdaptive: relay-only ServerApp, topology=%s, %s peer(s) per "
            "round, %s weights, sends %s", self.topology, self.peers_per_round, self.weights,
            self.share)
