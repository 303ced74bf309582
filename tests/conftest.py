"""Shared fixtures: a task identity for building Flower messages outside a running app."""

from __future__ import annotations

import pytest
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture
def task_identity() -> None:
    """Flower builds a message's metadata from the running task; tests play the ServerApp."""
    TaskIdentity.run_id = 1234
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
