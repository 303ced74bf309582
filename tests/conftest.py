"""Shared fixtures: a task identity for building Flower messages outside a running app."""

from __future__ import annotations

import pytest

from flower_gd.flower_internals import act_as_serverapp


@pytest.fixture
def task_identity() -> None:
    """Flower builds a message's metadata from the running task; tests play the ServerApp."""
    act_as_serverapp(run_id=1234, task_id=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long_running` (deployments, `flwr run`, a killed run: minutes each,
    mostly waiting on the processes they start) go first: `make test`'s workers are handed
    them before the rest, so they run beside it rather than one after another at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)  # stable
