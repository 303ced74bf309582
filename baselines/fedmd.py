"""FedMD (Li & Wang, 2019): nodes fit the server's average of their logits, then revisit."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from baselines.consensus import CONSENSUS_KEYS, ConsensusServer, node_steps, run_server
from flower_gd.config import ConfigError, RunConfig
from flower_gd.method import Method, ServerRun
from flower_gd.node import Node
from flower_gd.training import train_logit_l1


class FedMD(ConsensusServer):
    r"""FedMD's server: the plain mean of the nodes' logits on this round's public subset.

    Li and Wang, "FedMD: Heterogenous Federated Learning via Model Distillation" (NeurIPS
    2019 workshop on federated learning). Each round every party m sends its class scores
    f_m(x) on a public subset d_j, the server forms the consensus

    .. math:: \tilde f(x) = \frac{1}{m} \sum_{k=1}^{m} f_k(x), \qquad x \in d_j,

    and every party *digests* it (trains f_m towards \tilde f on d_j) and then *revisits* its
    private data for a few epochs. The scores are logits (the authors' code removes the
    softmax layer) and the digest loss is the mean absolute error between the party's logits
    and the consensus (`train_logit_l1`), `digest-epochs` (their code: 1) with Adam at 1e-3
    as in their code, then `revisit-epochs` on private data (2-10 in their configs).

    Deviations, said plainly: our common data is unlabelled, so the paper's first step
    (transfer learning on the labelled public set) becomes the shared local phase on private
    data only; the revisit trains with the run's SGD settings as every method here, where
    the authors used Adam at 1e-3 throughout; the subset d_j is drawn from the run's seed
    and round on both sides (`public-per-round`, 0 = all of X_c) instead of being sent as
    indices.
    """

    kind = "logits"
    label = "FedMD"

    def aggregate(self, scores: np.ndarray) -> np.ndarray:
        return scores.mean(axis=0)


DIGEST_ADAM_LR = 1e-3  # the authors' optimiser for every FedMD step (their Keras code)


def digest(node: Node, model: torch.nn.Module, x: np.ndarray, target: np.ndarray) -> float:
    """Fit the consensus logits (L1) with Adam at 1e-3, `digest-epochs`."""
    return train_logit_l1(model, x, target, node.cfg.digest_epochs, node.optim,
                          node.seed(node.current_round), adam_lr=DIGEST_ADAM_LR)


def check(cfg: RunConfig) -> None:
    if cfg.codec not in ("float32", "float16"):
        raise ConfigError(f"fedmd shares logits; codec={cfg.codec!r} quantizes probabilities: "
                          "use codec=float32 or float16")


def run(server: ServerRun) -> dict[str, Any]:
    return run_server(FedMD, server)


METHOD = Method(
    name="fedmd",
    run=run,
    steps=node_steps("logits", digest),
    shares=frozenset({"scores"}),
    reads=CONSENSUS_KEYS - {"codec-topk"},  # logits: topk is refused
    color="#8c564b",
    check=check,
)
