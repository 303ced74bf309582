"""Fault injection for simulations: nodes that die, nodes that answer late, lost messages.

- `drop-nodes` ("3@2"): from round 2 on, partition 3 answers nothing but an error reply,
  the stand-in for the SuperLink's NODE_UNAVAILABLE reply about a dead SuperNode. It never
  touches its state again.
- `slow-nodes` / `slow-delay`: those partitions wait `slow-delay` seconds before answering a
  pull; a relay that waits only `pull-timeout` seconds counts the pull as failed.
- `message-loss` p: `FaultyGrid` loses each message, either way, with probability p. A lost
  instruction costs its bytes on the wire (the meter counts it) but never arrives; a lost
  reply was sent by the node (metered) and is replaced by an error reply. The simulation
  reports a loss at once instead of waiting out a timeout, as a deployment would. Which
  messages are lost follows the seed: every message draws twice (its way there, its reply's
  way back), in the partition order of the nodes, whatever the order replies arrive in and
  whatever node ids Flower hands out; only round 0's messages to nodes not yet known by their
  partition (the local phase's first send, its re-sends to nodes whose first reply was lost,
  and the status queries of nodes still silent) draw in node-id order, so a rerun of a
  message-loss run can lose other round-0 messages and, through their re-sends, shift later
  draws.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from flower_gd.grids import ForwardingGrid
from flower_gd.node import Node

LOST_CODE = ErrorCode.MESSAGE_UNAVAILABLE
DOWN_CODE = ErrorCode.NODE_UNAVAILABLE


def unavailable_reply(message: Message, node: Node) -> Message | None:
    """The error reply of a node that `drop-nodes` has killed by this message's round."""
    dies_at = node.cfg.dropouts.get(node.partition_id)
    if dies_at is None or (node.server_round or 0) < dies_at:
        return None
    return Message(Error(code=DOWN_CODE, reason=f"node {node.partition_id} is down since round "
                         f"{dies_at} (fault injection: drop-nodes)"), reply_to=message)


def delay_if_slow(node: Node) -> None:
    """A slow node answers a pull `slow-delay` seconds late."""
    if node.partition_id in node.cfg.slow_partitions and node.cfg.slow_delay > 0:
        time.sleep(node.cfg.slow_delay)


@dataclass(frozen=True)
class LostMessage:
    """One message lost in transit."""

    round: int
    direction: str  # "down" (to the node) or "up" (its reply)
    node_id: int
    message_type: str


class FaultyGrid(ForwardingGrid):
    """A Grid that loses each message with probability `loss`, wrapped around the meter.

    Parameters
    ----------
    grid : Grid
        The metered Grid (lost instructions are still metered as sent).
    loss : float
        Probability that a message, instruction or reply, is lost.
    seed : int
        Seeds which messages are lost.
    """

    def __init__(self, grid: Grid, loss: float, seed: int) -> None:
        super().__init__(grid)
        self.loss = loss
        self.rng = np.random.default_rng([seed, 0x1055])
        self.lost: list[LostMessage] = []
        self.round = 0
        # node id -> partition id, filled as nodes say which partition they are (the run's
        # recorder shares its map): the order in which messages draw their fate
        self.partition_of: dict[int, int] = {}

    def set_round(self, server_round: int) -> None:
        self.round = server_round
        if hasattr(self._grid, "set_round"):
            self._grid.set_round(server_round)

    def _lose(self, message: Message, direction: str, reply_to: Message) -> Message:
        md = message.metadata
        node = md.dst_node_id if direction == "down" else md.src_node_id
        self.lost.append(LostMessage(self.round, direction, node, md.message_type))
        return Message(Error(code=LOST_CODE, reason=f"{direction} message lost in transit "
                             f"(fault injection: message-loss={self.loss:g})"), reply_to=reply_to)

    def _draw_order(self, message: Message) -> tuple[int, int]:
        node = message.metadata.dst_node_id
        partition = self.partition_of.get(node)
        return (0, partition) if partition is not None else (1, node)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        # two draws per message, in partition order: the fates do not depend on arrival order
        fate = {id(m): self.rng.random(2) < self.loss
                for m in sorted(messages, key=self._draw_order)}
        lost_down = [m for m in messages if fate[id(m)][0]]
        sent = [m for m in messages if not fate[id(m)][0]]
        for m in lost_down:  # the bytes left the sender
            if hasattr(self._grid, "record_sent"):
                self._grid.record_sent(m)
        replies = list(self._grid.send_and_receive(sent, timeout=timeout)) if sent else []
        by_id = {m.metadata.message_id: m for m in sent}
        out = []
        for reply in replies:
            original = by_id.get(reply.metadata.reply_to_message_id)
            if original is not None and not reply.has_error() and fate[id(original)][1]:
                out.append(self._lose(reply, "up", original))
            else:
                out.append(reply)
        return out + [self._lose(m, "down", m) for m in lost_down]
