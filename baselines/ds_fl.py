"""DS-FL (Itahara et al., IEEE TMC): entropy-reduced average of soft labels on open data."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.common.logger import log

from baselines.consensus import CONSENSUS_KEYS, ConsensusServer, node_steps, run_server
from flower_gd.method import Method, ServerRun
from flower_gd.node import Node
from flower_gd.training import softmax, train_soft


def entropy_reduction_average(probs: np.ndarray, temperature: float) -> np.ndarray:
    r"""ERA over the nodes' axis: the softmax of the mean probability vector divided by T.

    .. math:: y(x) = \mathrm{softmax}\Big(\frac{1}{T} \cdot \frac{1}{K}
              \sum_{k=1}^{K} p_k(x)\Big)

    `probs` (nodes, n, C) -> (n, C). The class order of the plain average (simple
    averaging, SA) is kept for every T; T -> infinity gives the uniform vector. It is not
    sharper than SA on every sample: probabilities lie in [0, 1], so at T = 0.1 (the
    paper's value, as we read it) the exponents differ by at most 10 and no class gets zero
    mass. An average split between two of 10 classes comes out flatter (each empty class
    keeps e^-5 of the top classes' weight); nearly flat averages, the non-IID case ERA is
    for, sharpen only where T < 1/C (tests/test_consensus.py pins both).
    """
    return softmax(probs.mean(axis=0).astype(np.float32), temperature)


class DSFL(ConsensusServer):
    r"""DS-FL's server: entropy reduction averaging (ERA) of the nodes' soft labels.

    Itahara, Nishio, Koda, Morikura and Yamamoto, "Distillation-Based Semi-Supervised
    Federated Learning for Communication-Efficient Collaborative Training With Non-IID
    Private Data" (IEEE TMC, 2021). Each round the nodes upload softmax outputs on a subset
    of the unlabelled open data, the server aggregates them with ERA
    (`entropy_reduction_average`, temperature `era-temperature`) and distributes the
    aggregate; every node distils it (soft-label cross-entropy, `digest-epochs`) and trains
    on its private data (`revisit-epochs`) before its next prediction.

    Deviation, said plainly: the paper's server also distils a global model on the
    aggregate; here the nodes' own models are what is evaluated (as for every method here
    but DLAD, FedAvg and central), and no server model is trained.
    """

    kind = "probs"
    label = "DS-FL"

    def aggregate(self, scores: np.ndarray) -> np.ndarray:
        return entropy_reduction_average(scores, self.cfg.era_temperature)

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t└── entropy reduction averaging at T=%s", self.cfg.era_temperature)


def digest(node: Node, model: torch.nn.Module, x: np.ndarray, target: np.ndarray) -> float:
    """Distil the aggregate: KL(target || softmax(model)) (soft cross-entropy up to a
    constant), `digest-epochs`."""
    return train_soft(model, x, target, node.cfg.digest_epochs, node.optim, 1.0,
                      node.seed(node.current_round))


def run(server: ServerRun) -> dict[str, Any]:
    return run_server(DSFL, server)


METHOD = Method(
    name="ds-fl",
    run=run,
    steps=node_steps("probs", digest),
    shares=frozenset({"scores"}),
    reads=CONSENSUS_KEYS | {"era-temperature"},
    color="#e377c2",
)
