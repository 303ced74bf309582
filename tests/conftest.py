"""Shared fixtures: a task identity for building Flower messages outside a running app."""

from __future__ import annotations

import pytest

from flower_gd.flower_internals import act_as_serverapp


@pytest.fixture
def task_identity() -> None:
    """Flower builds a message's metadata from the running task; tests play the ServerApp."""
    act_as_serverapp(run_id=1234, task_id=1)
