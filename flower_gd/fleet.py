"""Waiting for the fleet: every method needs its full, fixed set of nodes before round 0."""

from __future__ import annotations

import time
from logging import INFO

from flwr.common.logger import log
from flwr.serverapp import Grid


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float = 120.0,
                   poll_s: float = 0.5) -> list[int]:
    """Block until `num_nodes` nodes are connected; return their ids, sorted.

    The ServerApp can start before every SuperNode has registered (in simulation too), so
    a method that reads `get_node_ids()` at once may miss nodes.

    Raises
    ------
    RuntimeError
        When fewer nodes than `num_nodes` connect within `timeout` seconds.
    """
    deadline = time.time() + timeout
    logged = -1
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= num_nodes:
            if len(nodes) > num_nodes:
                raise RuntimeError(
                    f"{len(nodes)} nodes connected but num-nodes={num_nodes}: set num-nodes to "
                    "the federation's size (options.num-supernodes for simulations)")
            return nodes
        if time.time() > deadline:
            raise RuntimeError(
                f"only {len(nodes)} of num-nodes={num_nodes} nodes connected within "
                f"{timeout:.0f}s: start more SuperNodes or lower num-nodes")
        if len(nodes) != logged:
            log(INFO, "waiting for nodes: %d of %d connected", len(nodes), num_nodes)
            logged = len(nodes)
        time.sleep(poll_s)
