"""Local baseline: every node trains on its private data only (the local phase alone)."""

from __future__ import annotations

from typing import Any

from flower_gd.method import Method, ServerRun
from strategies import gossip
from strategies.relay import PullRelay, relay_steps


def run(server: ServerRun) -> dict[str, Any]:
    """The relay's round 0 and nothing after it."""
    return PullRelay(**PullRelay.relay_options(server)).run(server, num_rounds=0)


# The lower bound: nodes run exactly gossip's local phase (same data, model, epochs, seeds
# and snapshot), so the gap between `local` and `gossip` is what the exchange adds. No
# payload is ever sent.
METHOD = Method(
    name="local",
    run=run,
    steps=relay_steps(gossip.local_phase),
    shares=frozenset(),
    reads=frozenset({"local-epochs"}),
    color="#9e9e9e",
)
