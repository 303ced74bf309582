"""Local baseline: every node trains on its private data only (the local phase alone)."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from strategies.gossip import GossipDistillation


class LocalTraining(GossipDistillation):
    """The lower bound: the gossip local phase and nothing after it.

    Nodes run exactly the local phase of `gossip` (same data, model, epochs and seeds), so
    the gap between `local` and `gossip` is what the exchange adds. No payload is sent.
    """

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 0,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        return super().start(grid, num_rounds=0, timeout=timeout)
