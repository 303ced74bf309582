"""Gossip Distillation (Moriwaki & Shudo): serverless pull gossip of inference lists."""

from __future__ import annotations

from logging import WARNING
from typing import Any

from flwr.app import RecordDict
from flwr.common.logger import log

from flower_gd.codecs import Expect, InferencePayload, encode_payload
from flower_gd.distill import hard_labels, mix_inference_lists
from flower_gd.method import Method, ServerRun
from flower_gd.node import Node, Timer
from flower_gd.training import train_hard
from strategies.peers import decode_peers, robust
from strategies.relay import RELAY_KEYS, PullRelay, relay_steps

LIST = "inference-list"  # the snapshot array IL_i


# ======================================================================== node side
def local_phase(node: Node, content: RecordDict | None = None) -> dict[str, float]:
    """Step 1: train M_i on PD_i, infer X_c into IL_i, set C_i = 1 (snapshot of round 0)."""
    with Timer() as t:
        model, loss = node.fit_private()
        scores = node.scores(model)
        node.store.commit(0, model, {LIST: scores}, {"counter": 1})
    return node.local_phase_metrics(loss, t.seconds, scores)


def share(node: Node, content: RecordDict | None = None) -> RecordDict:
    """Answer a pull: the node's (IL_i, C_i) as of the end of the previous round.

    A Byzantine node (`byzantine-nodes`) sends a corrupted list with an honest counter.
    """
    snap = node.base_snapshot()
    scores = node.outgoing_scores(snap.array(LIST), node.cfg.inference_output)
    payload = InferencePayload(scores, int(snap.meta["counter"]), node.cfg.inference_output)
    return encode_payload(payload, node.outgoing_codec)


def gossip_step(node: Node, content: RecordDict) -> dict[str, float]:
    """Steps 2.3-2.5 on a pulled (IL_j, C_j): mix (Eq. 1), label, train one epoch, re-infer.

    A payload that fails validation is refused before it touches anything and counted
    (`payload-rejected`); with no valid payload (every pull failed, or the one pulled was
    refused) the state stays as it is.
    """
    with Timer() as t:
        base = node.base_snapshot()
        il_own = base.array(LIST)
        counter = int(base.meta["counter"])
        peers, refused = decode_peers(node, content, il_own.shape,
                                      Expect(kind=node.cfg.inference_output))
        if not peers:
            return {"peers": 0, "payload-rejected": len(refused), "counter": counter,
                    "wall-s": t.seconds}
        peer = peers[0]  # the paper pulls one peer
        mixed = mix_inference_lists(il_own, counter, robust(node, il_own, peer.scores),
                                    peer.counter)  # paper Eq. 1
        labels = hard_labels(mixed)
        label_acc = node.label_accuracy(labels)
        if node.cfg.label_source == "ground-truth":
            # LABEL LEAK, on purpose: what the reference code's dist_train does.
            labels = node.data.common_y
        model = base.load_model(node.new_model())
        step_round = node.current_round
        loss = train_hard(model, node.data.common_x, labels, node.cfg.round_epochs,
                          node.optim, node.seed(step_round))
        scores = node.scores(model)
        node.store.commit(step_round, model, {LIST: scores}, {"counter": counter + 1})
    return {"train-loss": loss, "label-accuracy": label_acc, "peers": 1,
            "payload-rejected": len(refused), "counter": counter + 1, "wall-s": t.seconds}


# ======================================================================== relay side
class GossipDistillation(PullRelay):
    r"""Gossip Distillation, with the ServerApp as a relay only.

    Moriwaki & Shudo, "Gossip Distillation: Decentralized Deep Learning Transmitting
    neither Training Data nor Models". Every node i trains M_i on its private data, infers
    the common data X_c into an inference list IL_i and sets C_i = 1. Then, each round,
    every node pulls (IL_j, C_j) from a random peer j != i, mixes (paper Eq. 1)

    .. math:: L_{mix} = \frac{IL_j C_j + IL_i C_i}{C_j + C_i},

    trains M_i for `round-epochs` on (X_c, argmax L_mix), re-infers X_c into IL_i and
    increments C_i.

    The pulls, the forwarding, the fault handling and resume are the relay's
    (:class:`~strategies.relay.PullRelay`, whose docstring lists the messages a node must
    honour); this class adds only the label-leak warning. With ``label-source =
    ground-truth`` nodes train on the common data's true labels instead, as the public
    reference code does: a LABEL LEAK, kept to show where the published numbers come from.
    """

    def __init__(self, *args: Any, label_leak: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_leak = label_leak

    def summary(self) -> None:
        super().summary()
        if self.label_leak:
            log(WARNING, "\t└── label-source=ground-truth: LABEL LEAK (reference-code behaviour)")


def run(server: ServerRun) -> dict[str, Any]:
    strategy = GossipDistillation(**PullRelay.relay_options(server),
                                  label_leak=server.cfg.label_source == "ground-truth")
    return strategy.run(server, server.cfg.num_server_rounds)


METHOD = Method(
    name="gossip",
    run=run,
    steps=relay_steps(local_phase, share, gossip_step),
    shares=frozenset({"scores"}),
    reads=RELAY_KEYS | {"local-epochs", "num-server-rounds", "round-epochs", "label-source",
                        "inference-output", "codec", "codec-topk", "robust-mix",
                        "clip-radius"},
    color="#1f77b4",
)
