"""What the method registry holds for one method, and what its strategy is started with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.app import RecordDict
from flwr.serverapp import Grid

from flower_gd.config import RunConfig
from flower_gd.federation import FederatedData, federated_data
from flower_gd.node import Node
from flower_gd.results import RunRecorder
from flower_gd.training import OptimConfig

# A node-side step: the node a message is addressed to and the message's content in, the
# reply's content out (a dict of metrics becomes a reply carrying only those metrics).
NodeStep = Callable[[Node, RecordDict], RecordDict | dict[str, float]]


@dataclass(frozen=True)
class ServerRun:
    """What a method's strategy is started with on the ServerApp."""

    cfg: RunConfig
    run_dir: str
    grid: Grid  # metered (and lossy under `message-loss`): every byte is counted
    recorder: RunRecorder

    @property
    def optim(self) -> OptimConfig:
        return OptimConfig.of(self.cfg)

    def server_data(self) -> FederatedData:
        """The server's copy of the data: X_c and the test set (the central bound: all)."""
        return federated_data(self.cfg, self.cfg.num_nodes)


@dataclass(frozen=True)
class Method:
    """One method, as the ServerApp, the ClientApp, config validation, tables and plots see it.

    Attributes
    ----------
    name : str
        The run-config value of `method`.
    run : Callable[[ServerRun], dict]
        Builds the method's strategy and runs it to the end; returns extra summary fields.
    steps : Mapping[str, NodeStep]
        Node side: message type (``train.<action>``, ``query.<action>``, ``evaluate``) ->
        the step that answers it. The ClientApp answers nothing else for this method.
    shares : frozenset[str]
        Metering tags of what may leave a node (``scores``, ``weights``, ``data``;
        ``control`` always may): checked against the meter's record by the tests.
    reads : frozenset[str]
        Run-config keys this method honours beyond the keys every method reads. A key that
        some method lists is named in a run's label only for the methods that read it.
    global_model : bool
        Every node evaluates one server-side model at the end (tables name that model).
    color : str
        Its colour in every figure (table order is the registry's order).
    check : Callable[[RunConfig], None] | None
        Refuses (ConfigError) a config this method cannot run, before any work starts.
    """

    name: str
    run: Callable[[ServerRun], dict[str, Any]]
    steps: Mapping[str, NodeStep]
    shares: frozenset[str]
    reads: frozenset[str] = field(default_factory=frozenset)
    global_model: bool = False
    color: str = "#333333"
    check: Callable[[RunConfig], None] | None = None
