"""Byte metering at the transport boundary: a Grid wrapper that sizes every message.

Every method talks to its nodes through one `MeteredGrid`, so no method can bypass it. A
message's size is what Flower's Fleet API sends to move it between the SuperLink and a
SuperNode (flwr 1.41, deployment engine): the serialized protobuf bodies, requests and
responses, of every call that exists because of that message.

- To a node: the `PullMessages` call that hands it over (its metadata and object tree), one
  `PullObject` call per position in its tree (Message, RecordDict, records, Arrays,
  ArrayChunks, each in its deflated = serialized form, with the object id, node and run id
  of the request), and the `ConfirmMessageReceived` call. Per position, not per object: the
  SuperNode lists an object once for every place the tree holds it and pulls each entry
  (flwr 1.41 `InMemoryObjectStore.preregister`, then `pull_objects`), so an object under two
  parents (two relayed payload records with the same bytes) crosses twice.
- From a node: the `PushMessages` call (metadata, object tree, the list of objects to push:
  one entry per tree position, as the SuperLink writes it, a session id) and one `PushObject`
  call per distinct object (the SuperNode pushes the set). An upper bound: the SuperLink
  asks only for objects it does not hold, so an object equal to one still stored from
  another node's reply (the same metadata record, the same weights) is not sent again. That
  depends on when the ServerApp confirms what it pulled, which simulation does not model;
  on a direct peer link nothing would be skipped. Going down the same holds in principle: a
  SuperNode does not pull an object it still holds from a message its ClientApp has not
  confirmed yet (never the case in these methods, one message per node at a time).

Not counted: HTTP/TLS/TCP framing, heartbeats, polls that return nothing, node
registration, fetching the app bundle (`flower_gd.meter_check` measures each of these
against the wire). In simulation nothing crosses a wire; the meter sizes what would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.app.message.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
    Reconnect,
)
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    ConfirmMessageReceivedResponse,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.node_pb2 import Node
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    get_all_nested_objects,
    get_object_tree,
    iterate_object_tree,
)

from flower_gd.codecs import ARRAYS_KEY, CONFIG_KEY, PAYLOAD_KEY, PRIVATE_DATA_KEY, payload_key
from flower_gd.flower_internals import REPLY_STORED
from flower_gd.grids import ForwardingGrid

MIB = 2**20  # bytes in a MiB, the unit of every table and figure
# What a message carries (see message_tag); runs saved before the rename said `logits`.
TAGS = ("scores", "weights", "data", "control")
LEGACY_TAGS = {"logits": "scores"}

# Key, in a step message's own ConfigRecord (codecs.CONFIG_KEY), under which a relaying
# strategy lists the nodes its forwarded payloads came from, in their order.
RELAY_FROM_KEY = "relay-from"


def object_nbytes(obj: InflatableObject) -> int:
    """Serialized size of a Flower object (message, record, array) with all it contains."""
    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())


SESSION_ID = "0" * 36  # the SuperLink's push session id is a str(uuid4())
RECONNECT_S = 5  # what the SuperLink puts in every PushMessagesResponse


def _field_nbytes(payload: int) -> int:
    """Bytes of one length-delimited protobuf field (tag < 16) carrying `payload` bytes."""
    return 1 + _varint_nbytes(payload) + payload


def _varint_nbytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def transfer_nbytes(message: Message, direction: str) -> int:
    """Bytes of the Fleet API bodies that move `message` to ("down") or from ("up") its node.

    Built from Flower's own request and response protos, sized with `ByteSize()`; object
    contents are added by length (sizing them inside a proto would copy every payload).
    """
    objects = {oid: len(obj.deflate()) for oid, obj in get_all_nested_objects(message).items()}
    header = message_to_proto(remove_content_from_message(message))
    header.metadata.message_id = message.object_id  # the SuperLink's id: the content address
    tree = get_object_tree(message)
    md = message.metadata
    node = Node(node_id=md.dst_node_id if direction == "down" else md.src_node_id)
    run_id = md.run_id
    if direction == "down":
        total = (PullMessagesRequest(node=node).ByteSize()
                 + PullMessagesResponse(messages_list=[header],
                                        message_object_trees=[tree]).ByteSize()
                 + ConfirmMessageReceivedRequest(node=node, run_id=run_id,
                                                 message_object_id=message.object_id).ByteSize()
                 + ConfirmMessageReceivedResponse().ByteSize())
        for position in iterate_object_tree(tree):
            oid, n = position.object_id, objects[position.object_id]
            total += (PullObjectRequest(node=node, run_id=run_id, object_id=oid).ByteSize()
                      + PullObjectResponse(object_found=True, object_available=True).ByteSize()
                      + _field_nbytes(n))
        return total
    total = (PushMessagesRequest(node=node, messages_list=[header], message_object_trees=[tree],
                                 clientapp_runtime_list=[0.0]).ByteSize()
             + PushMessagesResponse(reconnect=Reconnect(reconnect=RECONNECT_S),
                                    results={message.object_id: 0},
                                    # one entry per tree position, as the SuperLink
                                    # lists them (an object under two parents twice)
                                    objects_to_push=[t.object_id
                                                     for t in iterate_object_tree(tree)],
                                    session_id=SESSION_ID).ByteSize())
    for oid, n in objects.items():
        total += (PushObjectRequest(node=node, run_id=run_id, object_id=oid,
                                    session_id=SESSION_ID).ByteSize()
                  + PushObjectResponse(stored=True).ByteSize() + _field_nbytes(n))
    return total


def set_meter_round(grid: Grid, server_round: int) -> None:
    """Tell a MeteredGrid (or a wrapper around one) which round the next messages belong to;
    a no-op on Flower's own Grids."""
    if hasattr(grid, "set_round"):
        grid.set_round(server_round)


def message_tag(message: Message) -> str:
    """What a message carries: `scores` (inference lists: logits, probabilities or labels on
    the common data), `weights` (model arrays), `data` (raw private samples, only the
    `central` bound) or `control`."""
    if message.has_error():
        return "control"
    arrays = message.content.array_records
    if PRIVATE_DATA_KEY in arrays:
        return "data"
    if ARRAYS_KEY in arrays:
        return "weights"
    if PAYLOAD_KEY in message.content.config_records:
        return "scores"
    return "control"


def _payload_shares(message: Message, nbytes: int, count: int) -> list[int]:
    """Split a relay message's `nbytes` over its `count` payloads, by payload size."""
    if count == 1:
        return [nbytes]
    sizes = []
    for i in range(count):
        key = payload_key(i)
        size = 1
        if key in message.content.config_records:
            size += object_nbytes(message.content.config_records[key])
        sizes.append(size)
    shares = [nbytes * s // sum(sizes) for s in sizes]
    shares[0] += nbytes - sum(shares)  # integer bytes that still add up
    return shares


@dataclass(frozen=True)
class MeterEntry:
    """One metered message, or one p2p-equivalent transfer of a relayed payload."""

    round: int
    direction: str  # "down" (to the node) or "up" (from the node)
    node_id: int
    message_type: str
    tag: str
    nbytes: int
    kind: str = "wire"  # "wire" or "p2p"
    peer_id: int = -1  # for p2p: the node at the other end of the direct link


class MeteredGrid(ForwardingGrid):
    """A Grid that forwards to another Grid and records the size of every message.

    Parameters
    ----------
    grid : Grid
        The Grid Flower gave the ServerApp.
    """

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.entries: list[MeterEntry] = []
        self.round = 0
        self._late: set[str] = set()  # instructions whose reply came after we stopped waiting

    # --- metering -------------------------------------------------------------------
    def set_round(self, server_round: int) -> None:
        """Attribute the messages that follow to `server_round` (0 = local phase)."""
        self.round = server_round

    def _record(self, message: Message, direction: str) -> None:
        md = message.metadata
        nbytes = transfer_nbytes(message, direction)
        node = md.dst_node_id if direction == "down" else md.src_node_id
        tag = message_tag(message)
        self.entries.append(MeterEntry(self.round, direction, node, md.message_type, tag, nbytes))
        relay = (message.content.config_records.get(CONFIG_KEY) if direction == "down"
                 else None)
        if relay is not None and RELAY_FROM_KEY in relay:
            # Relayed payloads: on direct peer links each would cross once, peer -> node. A
            # message relaying several splits its bytes in proportion to their sizes.
            value = relay[RELAY_FROM_KEY]
            peers = [int(p) for p in (value if isinstance(value, list) else [value])]
            shares = _payload_shares(message, nbytes, len(peers))
            for peer, share in zip(peers, shares, strict=True):
                self.entries.append(MeterEntry(self.round, "down", node, md.message_type, tag,
                                               share, "p2p", peer))
                self.entries.append(MeterEntry(self.round, "up", peer, md.message_type, tag,
                                               share, "p2p", node))

    def record_sent(self, message: Message) -> None:
        """Meter a message that left the sender but was lost on the way (fault injection)."""
        self._record(message, "down")

    # --- the metered part of the Grid interface ---------------------------------------
    def collect_late(self) -> int:
        """Meter the replies that arrived after their sender stopped waiting (a pull past
        `pull-timeout`): the node sent them, so they crossed the wire. They are pulled off
        the link, counted in the round in which they are found, and dropped."""
        if not self._late:
            return 0
        late = list(self._grid.pull_messages(sorted(self._late)))
        for m in late:
            self._late.discard(m.metadata.reply_to_message_id)
            self._record(m, "up")
        return len(late)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.collect_late()
        messages = list(messages)
        for m in messages:
            self._record(m, "down")
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        for m in replies:
            self._record(m, "up")
        return replies

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply is in or `timeout` passes (as Flower's grids do)."""
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.time() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.time() < deadline):
            REPLY_STORED.clear()  # a reply stored after this line ends the wait below at once
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                REPLY_STORED.wait(0.02)  # set only in simulation; elsewhere a 20 ms poll
        self._late.update(pending)  # their replies may still come: metered when they do
        return replies
