"""A node's snapshots on disk: a fresh local phase clears what an earlier attempt left."""

import numpy as np
from torch import nn

from flower_gd.node_store import NodeStore


def test_a_new_local_phase_clears_the_later_rounds_of_an_earlier_attempt(tmp_path):
    """A killed run that restarts from round 0 (no resume point) must not start round 1
    from, or answer replays of, the killed attempt's rounds (they are newer than r0 and
    would be taken as this attempt's state)."""
    store = NodeStore(tmp_path, 3)
    model = nn.Linear(2, 2)
    for r in (0, 4, 5):  # what the killed attempt left
        store.commit(r, model, {"list": np.full((2, 2), r, np.float32)})
    store.save_reply(5, {"train-loss": 1.0})
    store.log_busy("train.gossip", 5, 0.1)
    store.commit(0, model, {"list": np.zeros((2, 2), np.float32)})  # the rerun's local phase
    assert store.rounds() == [0] and store.reply(5) is None and store.busy() == []
    store.commit(1, model, {"list": np.ones((2, 2), np.float32)})
    assert store.rounds() == [0, 1]
    assert store.snapshot(1).array("list")[0, 0] == 1.0  # round 1 is this attempt's
    store.commit(2, model)
    assert store.rounds() == [0, 1, 2]  # later rounds keep their usual pruning
