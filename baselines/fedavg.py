"""FedAvg baseline: Flower's own FedAvg strategy on the private data, recorded per node."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from flower_gd.byzantine import corrupt_arrays, flip_labels
from flower_gd.codecs import ARRAYS_KEY
from flower_gd.config import ConfigError, RunConfig
from flower_gd.federation import FederatedData
from flower_gd.fleet import wait_for_nodes
from flower_gd.metering import set_meter_round
from flower_gd.method import Method, ServerRun
from flower_gd.models import seeded_model
from flower_gd.node import RUN_DIR_KEY, Node, Timer
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import metrics_of
from flower_gd.training import held_out_metrics, train_hard

TRAIN = "train"  # Flower's own message type for FedAvg's round of local training
NODE_INFO_KEY = "node"


def local_update(node: Node, content: RecordDict) -> RecordDict:
    """Node side of a FedAvg round: load the global arrays, train `round-epochs` on PD_i."""
    server_round = node.current_round
    with Timer() as t:
        model = node.new_model()
        model.load_state_dict(content.array_records[ARRAYS_KEY].to_torch_state_dict())
        x, y = node.data.private(node.partition_id)
        attack = node.cfg.byzantine_attack if node.is_byzantine else None
        if attack == "flip":  # a Byzantine node trains on flipped labels
            y = flip_labels(y, node.data.dataset.num_classes)
        loss = train_hard(model, x, y, node.cfg.round_epochs, node.optim,
                          node.seed(server_round))
        state = model.state_dict()
        if attack in ("random", "malformed"):
            state = corrupt_arrays(state, attack, node.seed(server_round))
    return RecordDict({
        ARRAYS_KEY: ArrayRecord(state),
        "metrics": MetricRecord({"train-loss": loss, "num-examples": len(y), "wall-s": t.seconds}),
        NODE_INFO_KEY: ConfigRecord({"partition-id": node.partition_id}),
    })


class RecordedFedAvg(FedAvg):
    """Flower's FedAvg, unchanged in what it sends and aggregates.

    It only adds bookkeeping: it tells a metering Grid which round the messages belong to
    and hands every node's reply metrics to a RunRecorder. All connected nodes train in
    every round (fraction 1.0), under Flower's own minimum-node rules with `min-nodes` as
    the minimum: replies that fail (a dead node, a lost message) are left out of the
    average by Flower's FedAvg itself.

    The global model is evaluated once per round by the ServerApp (Flower's `evaluate_fn`,
    `global_evaluation`), not by every node: every node holds the same global model, so ten
    nodes evaluating it on the same test and validation sets computed one answer ten times
    (about two thirds of a Fashion-MNIST FedAvg run's node work), and the evaluation's model
    downloads were metered as if FedAvg needed them. Each node that trained in the round is
    recorded with the global model's metrics.
    """

    def __init__(self, num_nodes: int, recorder: RunRecorder | None = None,
                 min_nodes: int | None = None) -> None:
        low = num_nodes if min_nodes is None else min_nodes
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=low,
                         min_evaluate_nodes=0, min_available_nodes=low)
        self.num_nodes = num_nodes
        self.recorder = recorder
        self.partition_of: dict[int, int] = {}

    def start(self, grid: Grid, *args: Any, **kwargs: Any) -> Result:
        """Wait for the whole fleet first (nodes register one by one), then Flower's loop."""
        wait_for_nodes(grid, self.num_nodes, timeout=min(kwargs.get("timeout", 300), 300))
        return super().start(grid, *args, **kwargs)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        set_meter_round(grid, server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            if node not in self.partition_of:
                info = reply.content.config_records[NODE_INFO_KEY]
                self.partition_of[node] = int(str(info["partition-id"]))
                if self.recorder is not None:
                    self.recorder.add_node(node, self.partition_of[node])
            if self.recorder is not None:
                self.recorder.mark_alive(server_round, node)
                self.recorder.record(server_round, node, metrics_of(reply))
        # Flower sums the models in the order of the list it gets: the order the replies
        # arrived in, which changes from run to run, and so did the float32 sum's last bits
        # (digits niid1 finals moved by up to 9 points between reruns). Partition order
        # makes the average bit-for-bit reproducible, as DLAD's and the consensus targets are
        # (and the averaged training metrics, which Flower sums in the same order).
        replies.sort(key=lambda r: (self.partition_of.get(r.metadata.src_node_id, 1 << 30),
                                    r.metadata.src_node_id))
        if self.recorder is None:
            return super().aggregate_train(server_round, replies)
        with self.recorder.server_work():
            return super().aggregate_train(server_round, replies)

    def global_evaluation(self, model: torch.nn.Module, data: FederatedData
                          ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
        """Flower's `evaluate_fn`: test and validation metrics of the global model after
        each round (`model` is its architecture), recorded for every node that trained in
        the round; round 0 (the initial model, before any node took part) is not evaluated."""
        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0 or self.recorder is None:
                return None
            with self.recorder.server_work():
                model.load_state_dict(arrays.to_torch_state_dict())
                metrics = held_out_metrics(model, data.test, data.val)
            for node in self.recorder.alive[server_round]:
                self.recorder.record(server_round, node, metrics)
            self.recorder.end_round(server_round)
            return MetricRecord(dict(metrics))
        return evaluate_fn


def run(server: ServerRun) -> dict[str, Any]:
    cfg = server.cfg
    data = server.server_data()
    initial = seeded_model(cfg.global_model, data.dataset.input_shape[0],
                           data.dataset.num_classes, cfg.seed)
    strategy = RecordedFedAvg(cfg.num_nodes, server.recorder, cfg.min_nodes)
    strategy.start(
        grid=server.grid, initial_arrays=ArrayRecord(initial.state_dict()),
        num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout,
        train_config=ConfigRecord({RUN_DIR_KEY: server.run_dir}),
        evaluate_fn=strategy.global_evaluation(initial, data))
    return {}


def check(cfg: RunConfig) -> None:
    families = sorted(set(cfg.model.split(",")))
    if len(families) > 1:
        raise ConfigError(f"method=fedavg averages weights, so every node needs the same "
                          f"architecture; model={cfg.model!r} mixes {families}. Use one "
                          "model, or a knowledge-sharing method (gossip, dlad).")


METHOD = Method(
    name="fedavg",
    run=run,
    steps={TRAIN: local_update},
    shares=frozenset({"weights"}),
    reads=frozenset({"num-server-rounds", "round-epochs"}),
    global_model=True,
    color="#2ca02c",
    check=check,
)
