"""Distributed distillation (Bistritz, Mann & Bambos, NeurIPS 2020) over the pull relay."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.codecs import Expect, InferencePayload, encode_payload
from flower_gd.distill import round_subset
from flower_gd.method import Method, ServerRun
from flower_gd.node import Node, Timer
from flower_gd.training import infer, softmax, train_regularized
from strategies.peers import decode_peers, robust
from strategies.relay import RELAY_KEYS, PullRelay, relay_steps

LIST = "soft-decisions"  # the node's softmax outputs on all of X_c


def neighbourhood_average(own: np.ndarray, peers: list[np.ndarray]) -> np.ndarray:
    r"""The distillation target: the uniform average of the node's own soft decisions and
    those of the neighbours it heard from this round, per reference sample.

    .. math:: q_i(x) = \frac{1}{1 + |N_i|} \Big(p_i(x) + \sum_{j \in N_i} p_j(x)\Big)
    """
    return np.mean(np.stack([own, *peers]), axis=0).astype(np.float32)


# ======================================================================== node side
def local_phase(node: Node, content: RecordDict | None = None) -> dict[str, float]:
    """The shared local phase; its soft decisions on X_c are round 0's list."""
    with Timer() as t:
        model, loss = node.fit_private()
        probs = softmax(infer(model, node.data.common_x))
        node.store.commit(0, model, {LIST: probs})
    return node.local_phase_metrics(loss, t.seconds, probs)


def share(node: Node, content: RecordDict | None = None) -> RecordDict:
    """Answer a pull: soft decisions on this round's reference batch, as of the end of the
    previous round (a Byzantine node sends a corrupted list)."""
    idx = round_subset(node.cfg, len(node.data.common_x), node.current_round)
    probs = node.base_snapshot().array(LIST)[idx]
    return encode_payload(InferencePayload(node.outgoing_scores(probs, "probs"),
                                           node.current_round, "probs"), node.outgoing_codec)


def distill_step(node: Node, content: RecordDict) -> dict[str, float]:
    """Average the neighbours' soft decisions with the node's own on the reference batch,
    then train `round-epochs` on private cross-entropy + `distill-weight` x KL to that
    average; re-infer X_c. Refused payloads never touch the node; with none valid the
    state stays as it is."""
    with Timer() as t:
        r = node.current_round
        base = node.base_snapshot()
        idx = round_subset(node.cfg, len(node.data.common_x), r)
        own = base.array(LIST)[idx]
        peers, refused = decode_peers(node, content, own.shape, Expect(kind="probs"))
        if not peers:
            return {"peers": 0, "payload-rejected": len(refused), "wall-s": t.seconds}
        target = neighbourhood_average(own, [robust(node, own, p.scores) for p in peers])
        model = base.load_model(node.new_model())
        x, y = node.data.private(node.partition_id)
        loss = train_regularized(model, x, y, node.data.common_x[idx], target,
                                 node.cfg.round_epochs, node.optim, node.cfg.distill_weight,
                                 node.seed(r))
        node.store.commit(r, model, {LIST: softmax(infer(model, node.data.common_x))})
    return {"train-loss": loss, "peers": len(peers), "payload-rejected": len(refused),
            "label-accuracy": node.label_accuracy(target.argmax(axis=1), idx),
            "wall-s": t.seconds}


# ======================================================================== relay side
class DistributedDistillation(PullRelay):
    r"""Distributed distillation, serverless, with the ServerApp as a relay only.

    Bistritz, Mann and Bambos, "Distributed Distillation for On-Device Learning" (NeurIPS
    2020). Nodes on a communication graph exchange soft decisions (softmax outputs) on a
    shared unlabelled reference set with their neighbours only, and each minimises its
    private loss regularised by the distance of its soft decisions from its neighbourhood's:

    .. math:: \min_{w_i}\; L_i(w_i) + \rho\, \frac{1}{|R|} \sum_{x \in R}
              \mathrm{KL}\big(q_i(x) \,\|\, \mathrm{softmax}(f(x; w_i))\big),

    with q_i the uniform average of its own and its neighbours' soft decisions
    (`neighbourhood_average`), rho = `distill-weight`, R this round's reference batch
    (`public-per-round`, drawn from the seed and round; 0 = all of X_c). Neighbours are the
    relay's pulls: `gossip-peers` per round under `topology` (ring with 2 peers: both
    neighbours of the cycle). Repeated rounds carry every node's knowledge across the graph.

    Our reading, said plainly: the paper's exact divergence, weighting, step schedule and
    its consensus tracking of the network-wide average are not reproduced from its text
    (we had only its abstract and reviews at hand); this is the plain neighbourhood-average
    form, trained jointly with the private loss in each SGD step (`train_regularized`).
    """

    def __init__(self, *args: Any, distill_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.distill_weight = distill_weight

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t└── distributed distillation: private CE + %s x KL to the "
            "neighbourhood average", self.distill_weight)


def run(server: ServerRun) -> dict[str, Any]:
    strategy = DistributedDistillation(**PullRelay.relay_options(server),
                                       peers=server.cfg.gossip_peers,
                                       distill_weight=server.cfg.distill_weight)
    return strategy.run(server, server.cfg.num_server_rounds)


METHOD = Method(
    name="dist-distill",
    run=run,
    steps=relay_steps(local_phase, share, distill_step),
    shares=frozenset({"scores"}),
    reads=RELAY_KEYS | {"local-epochs", "num-server-rounds", "round-epochs", "gossip-peers",
                        "public-per-round", "distill-weight", "codec", "codec-topk",
                        "robust-mix", "clip-radius"},
    color="#17becf",
)
