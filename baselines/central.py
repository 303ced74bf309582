"""Central bounds: one model on the pooled private data (`central`) or on all labels
(`central-all`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from flower_gd.codecs import PRIVATE_DATA_KEY
from flower_gd.federation import FederatedData
from flower_gd.metering import set_meter_round
from flower_gd.method import Method, ServerRun
from flower_gd.models import seeded_model
from flower_gd.node import Node
from flower_gd.results import RunRecorder
from flower_gd.strategy_base import NodeRecordingStrategy, partition_of_reply
from flower_gd.training import OptimConfig, held_out_metrics, train_hard

UPLOAD = "query.private_data"
SERVER_NODE_ID = 0  # the row of the server's own model in rounds.csv (partition -1)


def share_private(node: Node, content: RecordDict | None = None) -> RecordDict:
    """What only the central bound asks for: the node's raw labelled samples."""
    x, y = node.data.private(node.partition_id)
    return RecordDict({
        PRIVATE_DATA_KEY: ArrayRecord({"x": Array(x), "y": Array(y)}),
        "metrics": MetricRecord({"partition-id": node.partition_id, "num-examples": len(y)}),
    })


class CentralTraining(NodeRecordingStrategy):
    """Upper bounds, not deployable methods: a single model trained where all data meets.

    ``central`` (the paper's "labeled" row): every node uploads its private data (metered
    with the tag ``data``, so the cost of centralising shows up) and the server trains one
    model on the pool. ``central-all`` (the ceiling): the server trains on the whole
    labelled training set, common data included; nothing is sent.

    Parameters
    ----------
    pooled_private : bool
        True for ``central``, False for ``central-all``.
    data, family, optim, epochs, seed
        Data, architecture, SGD settings, epochs (``local-epochs``) and seed.
    """

    def __init__(self, run_dir: str, num_nodes: int, data: FederatedData, family: str,
                 optim: OptimConfig, epochs: int, seed: int, pooled_private: bool,
                 recorder: RunRecorder | None = None) -> None:
        super().__init__(run_dir, num_nodes, recorder)
        self.data, self.family, self.optim = data, family, optim
        self.epochs, self.seed, self.pooled_private = epochs, seed, pooled_private

    def summary(self) -> None:
        what = "pooled private data" if self.pooled_private else "whole labelled training set"
        log(INFO, "\t├── central bound: one %s on the %s", self.family, what)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return [self.message(n, UPLOAD, server_round) for n in self.node_ids]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.train_central(server_round, replies)

    def train_central(self, server_round: int, replies: Iterable[Message]
                      ) -> tuple[ArrayRecord, MetricRecord]:
        """Pool what arrived (central) or take the full set (central-all), then train."""
        if self.pooled_private:
            got = self.collect(server_round, replies, "private-data upload")
            self.require_min(got, "the private-data upload")
            xs, ys = [], []
            for node, reply in got.items():  # partition order: SGD sees this order
                self.register(node, partition_of_reply(reply))
                upload = reply.content.array_records[PRIVATE_DATA_KEY]
                xs.append(upload["x"].numpy())
                ys.append(upload["y"].numpy())
            x, y = np.concatenate(xs), np.concatenate(ys)
        else:  # every training sample but the validation set
            keep = np.setdiff1d(np.arange(len(self.data.dataset.y_train)), self.data.split.val)
            x, y = self.data.dataset.x_train[keep], self.data.dataset.y_train[keep]
        model = seeded_model(self.family, x.shape[1], self.data.dataset.num_classes, self.seed)
        loss = train_hard(model, x, y, self.epochs, self.optim, self.seed)
        held_out = held_out_metrics(model, self.data.test, self.data.val)
        if self.recorder is not None:
            self.recorder.add_node(SERVER_NODE_ID, -1)
            self.recorder.record(server_round, SERVER_NODE_ID,
                                 {**held_out, "train-loss": loss})
        return ArrayRecord(model.state_dict()), MetricRecord(
            {"accuracy": held_out["accuracy"], "loss": held_out["loss"],
             "num-examples": len(y)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # the server evaluates its own model on the test set

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 1,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        self.summary()
        result = Result()
        set_meter_round(grid, 0)
        replies: list[Message] = []
        if self.pooled_private:
            self.connect(grid, timeout)
            replies = list(grid.send_and_receive(
                self.configure_train(0, ArrayRecord(), ConfigRecord(), grid), timeout=timeout))
        result.arrays, metrics = self.train_central(0, replies)
        log(INFO, "round 0: %s", dict(metrics))
        result.evaluate_metrics_serverapp[0] = metrics
        if self.recorder is not None:
            self.recorder.end_round(0)
        return result


def _runner(pooled_private: bool) -> Callable[[ServerRun], dict[str, Any]]:
    def run(server: ServerRun) -> dict[str, Any]:
        cfg = server.cfg
        CentralTraining(server.run_dir, cfg.num_nodes, server.server_data(), cfg.global_model,
                        server.optim, cfg.local_epochs, cfg.seed, pooled_private=pooled_private,
                        recorder=server.recorder).start(grid=server.grid,
                                                        timeout=cfg.round_timeout)
        return {}
    return run


METHOD = Method(
    name="central",
    run=_runner(pooled_private=True),
    steps={UPLOAD: share_private},
    shares=frozenset({"data"}),
    reads=frozenset({"local-epochs"}),
    global_model=True,
    color="#9467bd",
)
# The ceiling: the server trains on every label of the training set; nodes send nothing.
CENTRAL_ALL = Method(
    name="central-all",
    run=_runner(pooled_private=False),
    steps={},
    shares=frozenset(),
    reads=frozenset({"local-epochs"}),
    global_model=True,
    color="#000000",
)
