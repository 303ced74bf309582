"""DLAD (Ma, Yonetani, Iqbal, ICPR 2020): centralized adaptive distillation, logit-sharing form."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from flower_gd.codecs import Expect, InferencePayload, encode_payload
from flower_gd.distill import adaptive_target, hard_labels
from flower_gd.federation import FederatedData
from flower_gd.metering import set_meter_round
from flower_gd.method import Method, ServerRun
from flower_gd.models import seeded_model
from flower_gd.node import Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import EVALUATE, NodeRecordingStrategy, evaluate
from flower_gd.training import OptimConfig, train_soft

UPLOAD = "train.dlad"


# ======================================================================== node side
def local_phase(node: Node, content: RecordDict | None = None) -> RecordDict:
    """Train f_i on PD_i and d_i (PD_i vs X_c); upload softmax(f_i(x)/T) and d_i(x) on X_c."""
    with Timer() as t:
        classifier, loss = node.fit_private()
        confidence, disc_loss = node.fit_discriminator()
        node.store.commit(0, classifier)
        own = node.soft_scores(classifier)
        probs = node.outgoing_scores(own, "probs")  # a Byzantine node's corrupted list
    upload = encode_payload(InferencePayload(probs, 1, "probs", confidence),
                            node.outgoing_codec)
    upload["metrics"] = MetricRecord({
        **node.local_phase_metrics(loss, t.seconds, own), "disc-loss": disc_loss,
        "mean-confidence": float(confidence.mean())})
    return upload


# ======================================================================== server side
class DLAD(NodeRecordingStrategy):
    r"""Data-free (logit-sharing) DLAD: the server distils one global model from all nodes.

    Ma, Yonetani and Iqbal, "Adaptive Distillation for Decentralized Learning from
    Heterogeneous Clients" (ICPR 2020). Each node i trains a classifier f_i on its private
    data PD_i and a discriminator d_i separating PD_i (positive) from the common data X_c
    (negative), and sends, for every x in X_c, softmax(f_i(x)/T) and d_i(x). The server
    forms the per-sample adaptive target and trains a global model on (X_c, y) with a
    soft-label KL loss:

    .. math:: y(x) = \sum_i w_i(x)\, \mathrm{softmax}(f_i(x)/T), \qquad
              w_i(x) = \frac{d_i(x)}{\sum_j d_j(x)}.

    The weighting formula is our reading of the paper's abstract ("adaptively emphasizing
    those with higher confidence"), the usual one: the paper's exact normalisation is not
    reproduced here from its text.

    Round 0 is the nodes' local phase and upload (metered as ``scores``) and the accuracy of
    their own classifiers; round 1 delivers the global model to every node (metered as
    ``weights``) and reports its accuracy on each node's test set.

    Messages a node must honour: ``train.dlad`` (``run-dir``; reply record
    ``inference``, a payload with ``scores`` and ``confidence``, metrics ``partition-id``) and
    ``evaluate`` with or without an ``arrays`` record. Nodes that do not answer, and uploads
    that fail validation, are left out of the target (logged); the run needs `min-nodes`
    valid uploads.

    Parameters
    ----------
    run_dir, num_nodes, recorder
        As for every strategy here.
    data : FederatedData
        The server's copy of X_c (DLAD's server holds the unlabelled common data).
    family : str
        Architecture of the global model.
    optim : OptimConfig
        SGD settings for the distillation.
    epochs, temperature, seed
        Distillation epochs, temperature T and seed of the global model.
    """

    def __init__(self, run_dir: str, num_nodes: int, data: FederatedData, family: str,
                 optim: OptimConfig, epochs: int, temperature: float, seed: int,
                 recorder: RunRecorder | None = None, min_nodes: int = 2) -> None:
        super().__init__(run_dir, num_nodes, recorder, min_nodes=min_nodes)
        self.data = data
        self.family = family
        self.optim = optim
        self.epochs = epochs
        self.temperature = temperature
        self.seed = seed

    def summary(self) -> None:
        log(INFO, "\t├── DLAD: global %s distilled for %s epochs at T=%s", self.family,
            self.epochs, self.temperature)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return [self.message(n, UPLOAD, server_round) for n in self.node_ids]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.distil(server_round, replies)

    def distil(self, server_round: int, replies: Iterable[Message]
               ) -> tuple[ArrayRecord, MetricRecord]:
        """Adaptive target from every valid upload, then KL distillation of the global model.

        An upload that fails validation, or carries no confidences, is left out (logged).
        """
        shape = (len(self.data.split.common), self.data.dataset.num_classes)
        # partition order: the sum is reproducible; the decoder refuses an upload without
        # confidences (Expect(confidence=True))
        valid = self.valid_uploads(server_round, replies, "DLAD upload", shape,
                                   Expect(kind="probs", confidence=True))
        with self.server_work():
            probs = np.stack([p.scores for p in valid.values()])  # (nodes, n_common, C)
            conf = np.stack([_confidence(p) for p in valid.values()])  # (nodes, n_common)
            target = adaptive_target(probs, conf)
            model = seeded_model(self.family, self.data.dataset.input_shape[0],
                                 self.data.dataset.num_classes, self.seed)
            loss = train_soft(model, self.data.common_x, target, self.epochs, self.optim,
                              self.temperature, self.seed)
        label_acc = float((hard_labels(target) == self.data.common_y).mean())
        return ArrayRecord(model.state_dict()), MetricRecord(
            {"distill-loss": loss, "target-label-accuracy": label_acc})

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 1,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """One-shot: upload (round 0), server distillation, delivery and evaluation (round 1)."""
        self.summary()
        result = Result()
        self.connect(grid, timeout)
        set_meter_round(grid, 0)
        replies = grid.send_and_receive(
            self.configure_train(0, ArrayRecord(), ConfigRecord(), grid), timeout=timeout)
        arrays, train_metrics = self.distil(0, replies)
        log(INFO, "DLAD server distillation: %s", dict(train_metrics))
        result.evaluate_metrics_clientapp[0] = self.evaluate_round(grid, 0, timeout)
        set_meter_round(grid, 1)
        result.arrays = arrays
        result.train_metrics_clientapp[1] = train_metrics
        result.evaluate_metrics_clientapp[1] = self.evaluate_round(grid, 1, timeout, arrays)
        return result


def _confidence(payload: InferencePayload) -> np.ndarray:
    """A DLAD upload's confidences (the decoder refused any upload without them)."""
    assert payload.confidence is not None
    return payload.confidence


def run(server: ServerRun) -> dict[str, Any]:
    cfg = server.cfg
    DLAD(server.run_dir, cfg.num_nodes, server.server_data(), cfg.global_model, server.optim,
         cfg.distill_epochs, cfg.temperature, cfg.seed, server.recorder,
         min_nodes=cfg.min_nodes).start(grid=server.grid, timeout=cfg.round_timeout)
    return {}


METHOD = Method(
    name="dlad",
    run=run,
    steps={UPLOAD: local_phase, EVALUATE: evaluate},
    shares=frozenset({"scores"}),
    reads=frozenset({"local-epochs", "disc-epochs", "distill-epochs", "temperature", "codec",
                     "codec-topk"}),
    global_model=True,
    color="#d62728",
)
