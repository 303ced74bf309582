"""A node as the ClientApp sees it: its config, data, model family and on-disk state."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message

from flower_gd.byzantine import attack_codec, byzantine_partitions, corrupt_scores
from flower_gd.codecs import CONFIG_KEY, Codec
from flower_gd.config import RunConfig
from flower_gd.federation import FederatedData, federated_data
from flower_gd.local_phase import CACHE_DIR, LocalPhaseCache, array_digest, key_of
from flower_gd.models import build_model
from flower_gd.node_store import NodeStore, Snapshot
from flower_gd.training import (
    OptimConfig,
    held_out_metrics,
    infer,
    sigmoid,
    softmax,
    train_discriminator,
    train_hard,
)

RUN_DIR_KEY = "run-dir"


def seed_everything(seed: int) -> None:
    """Seed numpy's legacy global RNG and torch (the code itself passes explicit generators)."""
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Node:
    """One node: built per message from the Flower Context and the message's `run-dir`."""

    cfg: RunConfig
    partition_id: int
    num_nodes: int
    run_dir: str
    server_round: int | None = None  # the round of the message being handled (None: latest)
    state_dir: str | None = None  # node-config `state-dir`: keep state here, not in run-dir
    # local-phase results this step used: part ("classifier", "discriminator") -> (key, reused)
    local_phase: dict[str, tuple[str, bool]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_message(cls, message: Message, context: Context, cfg: RunConfig) -> Node:
        """The node a message is addressed to; `cfg` is the context's run config, parsed."""
        # One CPU per simulated node (backend client resources): avoid oversubscription.
        torch.set_num_threads(1)
        config = message.content.config_records[CONFIG_KEY]
        run_dir = str(config[RUN_DIR_KEY])
        num_partitions = int(context.node_config["num-partitions"])
        if num_partitions != cfg.num_nodes:
            raise ValueError(f"the federation has {num_partitions} nodes but num-nodes="
                             f"{cfg.num_nodes}: set num-nodes to the federation's size")
        server_round = config.get("server-round")
        state_dir = context.node_config.get("state-dir")
        return cls(cfg, int(context.node_config["partition-id"]), num_partitions, run_dir,
                   None if server_round is None else int(str(server_round)),
                   None if state_dir is None else str(state_dir))

    @cached_property
    def data(self) -> FederatedData:
        return federated_data(self.cfg, self.num_nodes)

    @cached_property
    def store(self) -> NodeStore:
        """Snapshots under `<run-dir>/nodes/` or, on a deployed SuperNode with a
        `state-dir` node config, under `<state-dir>/<run-name>/nodes/` on that machine."""
        if self.state_dir:
            return NodeStore(Path(self.state_dir) / Path(self.run_dir).name, self.partition_id)
        return NodeStore(self.run_dir, self.partition_id)

    @property
    def model_name(self) -> str:
        return self.cfg.model_for(self.partition_id)

    @property
    def optim(self) -> OptimConfig:
        return OptimConfig.of(self.cfg)

    @property
    def codec(self) -> Codec:
        """How this node encodes the payloads it sends (run-config `codec`, `codec-topk`)."""
        return Codec(self.cfg.codec, self.cfg.codec_topk)

    def seed(self, server_round: int) -> int:
        """A distinct, reproducible seed per (run seed, node, round)."""
        return self.cfg.seed * 1_000_003 + self.partition_id * 1009 + server_round

    def new_model(self, family: str | None = None, num_outputs: int | None = None
                  ) -> torch.nn.Module:
        """A freshly initialised model: this node's family unless `family` is given."""
        seed_everything(self.seed(0))
        in_channels = self.data.dataset.input_shape[0]
        return build_model(family or self.model_name, in_channels,
                           num_outputs or self.data.dataset.num_classes, self.cfg.pretrained)

    @property
    def current_round(self) -> int:
        """The round of the message being handled (every step message carries one)."""
        if self.server_round is None:
            raise ValueError("the message carries no server-round: it is not a round's step")
        return self.server_round

    def base_snapshot(self) -> Snapshot:
        """The state a step of this round starts from: the newest snapshot before it."""
        return self.store.snapshot(None if self.server_round is None else self.server_round - 1)

    def load_model(self) -> torch.nn.Module:
        """This node's model as of the current round (the newest snapshot up to it)."""
        return self.store.snapshot(self.server_round).load_model(self.new_model())

    @cached_property
    def is_byzantine(self) -> bool:
        """Whether this node is one of the run's `byzantine-nodes` attackers."""
        return self.partition_id in byzantine_partitions(self.cfg.seed, self.cfg.num_nodes,
                                                         self.cfg.byzantine_nodes)

    def outgoing_scores(self, scores: np.ndarray, kind: str) -> np.ndarray:
        """What this node puts on the wire: its scores, or an attacker's replacement."""
        if not self.is_byzantine:
            return scores
        return corrupt_scores(scores, self.cfg.byzantine_attack, kind,
                              self.seed(self.server_round or 0))

    @property
    def outgoing_codec(self) -> Codec:
        """The codec of what this node sends (an attacker's malformed payload goes raw)."""
        if self.is_byzantine:
            return attack_codec(self.codec, self.cfg.byzantine_attack)
        return self.codec

    @cached_property
    def local_phase_cache(self) -> LocalPhaseCache:
        """Shared local-phase results: beside the sweep's run directories, or in the
        SuperNode's `state-dir`."""
        root = Path(self.state_dir) if self.state_dir else Path(self.run_dir).parent
        return LocalPhaseCache(root / CACHE_DIR)

    def _model_parts(self) -> dict[str, object]:
        """What a freshly initialised model of this node depends on."""
        return {"family": self.model_name, "pretrained": self.cfg.pretrained,
                "input-shape": self.data.dataset.input_shape,
                "classes": self.data.dataset.num_classes, "init-seed": self.seed(0)}

    def classifier_key(self) -> str:
        """Content address of this node's local model: its private data, model, epochs,
        optimiser and seeds."""
        x, y = self.data.private(self.partition_id)
        return key_of({"part": "classifier", **self._model_parts(), "data": array_digest(x, y),
                       "epochs": self.cfg.local_epochs, "optim": asdict(self.optim),
                       "train-seed": self.seed(0)})

    def discriminator_key(self) -> str:
        """Content address of this node's discriminator output: private and common data,
        model, epochs, optimiser and seeds."""
        x_private, _ = self.data.private(self.partition_id)
        return key_of({"part": "discriminator", **self._model_parts(), "classes": 1,
                       "data": array_digest(x_private),
                       "common": self.data.common_digest,
                       "epochs": self.cfg.disc_epochs, "optim": asdict(self.optim),
                       "train-seed": self.seed(1)})

    def fit_private(self) -> tuple[torch.nn.Module, float]:
        """The local phase every method shares: a fresh model trained on PD_i (computed
        once per content address, see `flower_gd.local_phase`)."""
        model = self.new_model()
        x, y = self.data.private(self.partition_id)
        key = self.classifier_key()
        cached = self.local_phase_cache.load_model(key, model)
        self.local_phase["classifier"] = (key, cached is not None)
        if cached is not None:
            return cached
        loss = train_hard(model, x, y, self.cfg.local_epochs, self.optim, self.seed(0))
        self.local_phase_cache.save(key, loss, model=model)
        return model, loss

    def fit_discriminator(self) -> tuple[np.ndarray, float]:
        """A fresh discriminator d_i trained on PD_i (label 1) against X_c (label 0); returns
        d_i(x) on X_c in [0, 1] and the last epoch's loss (DLAD, gossip-adaptive)."""
        x_private, _ = self.data.private(self.partition_id)
        key = self.discriminator_key()
        cached = self.local_phase_cache.load_confidence(key)
        self.local_phase["discriminator"] = (key, cached is not None)
        if cached is not None:
            return cached
        disc = self.new_model(num_outputs=1)
        loss = train_discriminator(disc, x_private, self.data.common_x, self.cfg.disc_epochs,
                                   self.optim, self.seed(1))
        confidence = sigmoid(infer(disc, self.data.common_x)[:, 0])
        self.local_phase_cache.save(key, loss, confidence=confidence)
        return confidence, loss

    def label_accuracy(self, labels: np.ndarray, rows: np.ndarray | None = None) -> float:
        """Share of X_c (or of its `rows`) whose pseudo-label equals the truth: a diagnostic
        of what a node would train on, never trained on."""
        truth = self.data.common_y if rows is None else self.data.common_y[rows]
        return float((labels == truth).mean())

    def local_phase_metrics(self, loss: float, wall_s: float,
                            scores: np.ndarray | None = None) -> dict[str, float]:
        """Every method's round-0 reply: the partition, its size, the training loss and the
        step's time; the label accuracy of `scores` on X_c when the phase inferred them;
        which local phase this node started from (the first 48 bits of the classifier's
        key, exact in a float), how many parts (classifier, discriminator) it has and how
        many of them were reused; and how many common samples its inference lists cover
        (what a payload's bits per sample divide by)."""
        key, _ = self.local_phase["classifier"]
        labels = {} if scores is None else {
            "label-accuracy": self.label_accuracy(scores.argmax(axis=1))}
        return {"partition-id": float(self.partition_id),
                "num-examples": float(len(self.data.parts[self.partition_id])),
                "train-loss": loss, "wall-s": wall_s, **labels,
                "common-samples": float(len(self.data.common_x)),
                "local-phase-key": float(int(key[:12], 16)),
                "local-phase-parts": float(len(self.local_phase)),
                "local-phase-reused": float(sum(hit for _, hit in self.local_phase.values()))}

    def soft_scores(self, model: torch.nn.Module) -> np.ndarray:
        """softmax(model(x) / T) on X_c, T = `temperature`: a distillation target."""
        return softmax(infer(model, self.data.common_x), self.cfg.temperature)

    def scores(self, model: torch.nn.Module) -> np.ndarray:
        """The node's inference list on X_c: (n_common, C), probabilities or raw logits."""
        logits = infer(model, self.data.common_x)
        return softmax(logits) if self.cfg.inference_output == "probs" else logits

    def test_metrics(self, model: torch.nn.Module) -> dict[str, float]:
        """Test and validation metrics of `model` (`training.held_out_metrics`)."""
        return held_out_metrics(model, self.data.test, self.data.val)


class Timer:
    """Wall-clock seconds of a block, for the per-node `wall_s` column."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.end: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds from entering the block to leaving it (or to now, inside it)."""
        return (self.end if self.end is not None else time.perf_counter()) - self.start
