"""The byte meter against hand-computed sizes, its tags, and p2p accounting of relays."""

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from flower_gd.codecs import CONFIG_KEY, Codec, InferencePayload, encode_payload
from flower_gd.metering import (
    RELAY_FROM_KEY,
    SESSION_ID,
    MeteredGrid,
    message_tag,
    object_nbytes,
    transfer_nbytes,
)

pytestmark = pytest.mark.usefixtures("task_identity")


def _payload_message(rows: int, dst: int = 7) -> Message:
    scores = np.full((rows, 10), 0.1, dtype=np.float32)
    return Message(content=encode_payload(InferencePayload(scores, 1, "probs"),
                                          Codec(compress=False)),
                   dst_node_id=dst, message_type="train.gossip")


def test_payload_record_size_is_object_header_plus_payload_bytes():
    # Hand-computed: the payload = magic and header length (8 bytes) + its JSON header +
    # 1000*10*4 data bytes = 40100, the one bytes value of a ConfigRecord. Its protobuf body:
    # the bytes field (tag, 3-byte length, 40100) = 40104, inside the config value (tag,
    # 3-byte length) = 40108, beside the key "payload" (tag, length, 7) in the item = 40117,
    # the item's own tag and 3-byte length = 40121. The object is "ConfigRecord" + " " + ""
    # (no children) + " " + that length + "\x00" + body.
    header = ('{"meta":{"counter":1,"kind":"probs","codec":"float32"},'
              '"parts":[["scores","<f4",[1000,10]]]}')
    payload = 8 + len(header) + 40000
    assert payload == 40100
    body = (1 + 3 + payload) + 4 + (1 + 1 + len("payload")) + 4
    msg = _payload_message(1000)
    records = [o for o in get_all_nested_objects(msg).values()
               if type(o).__name__ == "ConfigRecord" and len(o.deflate()) > payload]
    assert len(records) == 1
    assert len(records[0].deflate()) == len("ConfigRecord  40121") + 1 + body == 40141


def test_message_size_grows_by_exactly_the_payload_bytes():
    small, large = _payload_message(1000), _payload_message(1250)
    # 250 more rows of 10 float32 = 10000 bytes; the length fields keep their width
    # (40100 -> 50100; "[1000,10]" -> "[1250,10]" in the header), so everything else is
    # byte-for-byte the same size.
    assert object_nbytes(large) - object_nbytes(small) == 250 * 10 * 4
    # the float32 payload dominates: overhead of the whole tree is under 1 KiB
    assert 0 < object_nbytes(small) - 1000 * 10 * 4 < 1024
    for direction in ("down", "up"):
        assert (transfer_nbytes(large, direction) - transfer_nbytes(small, direction)
                == 250 * 10 * 4)


def _varint(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def test_each_object_costs_its_fleet_api_calls_by_hand():
    """One more record in a message = one more object: its content plus, by hand from
    Flower's protos, its entry in the object tree and the calls that move it."""
    node, run, oid = 2**40, 12345, 1 + 1 + 64  # an object id field: tag, length, 64 hex

    def message(records: int) -> Message:
        m = Message(content=RecordDict({f"r{i}": ConfigRecord({"x": i}) for i in range(records)}),
                    dst_node_id=node, message_type="train.x")
        m.metadata.__dict__["_run_id"] = run
        m.metadata.__dict__["_src_node_id"] = node  # as a reply from that node would say
        return m

    one, two = message(1), message(2)
    new = object_nbytes(two) - object_nbytes(one)  # the record and its id in the RecordDict
    record = len(ConfigRecord({"x": 1}).deflate())
    tree_entry = 1 + 1 + oid  # ObjectTree child: tag, length, (object id, no children)
    node_field = 1 + 1 + (1 + _varint(node))  # Node message inside a request
    run_field = 1 + _varint(run)
    content_field = 1 + _varint(record)  # tag and length before the object's bytes
    pull = node_field + run_field + oid + (2 + 2) + content_field  # request + found, available
    push = node_field + run_field + oid + (2 + len(SESSION_ID)) + 2 + content_field  # + stored
    assert transfer_nbytes(two, "down") - transfer_nbytes(one, "down") == new + tree_entry + pull
    # up: the SuperLink also lists the object among those it wants pushed
    assert (transfer_nbytes(two, "up") - transfer_nbytes(one, "up")
            == new + tree_entry + oid + push)


def test_an_object_under_two_parents_is_pulled_twice_and_pushed_once():
    """A node pulls every position of a message's object tree (flwr 1.41 lists an object
    again for each place it sits and pulls each entry), but pushes each distinct object once:
    two equal Arrays under two records cost the down direction as much as two different ones
    of the same size, and the up direction one Array and its chunk less."""
    x, y = np.arange(500, dtype=np.float32), np.arange(500, dtype=np.float32)[::-1].copy()

    def message(first: np.ndarray, second: np.ndarray) -> Message:
        content = RecordDict({"a": ArrayRecord({"w": Array(first)}),
                              "b": ArrayRecord({"v": Array(second)})})
        return Message(content=content, dst_node_id=3, message_type="train.gossip")

    same, different = message(x, x), message(x, y)
    assert len(get_all_nested_objects(same)) == len(get_all_nested_objects(different)) - 2
    assert transfer_nbytes(same, "down") == transfer_nbytes(different, "down")
    assert transfer_nbytes(same, "up") < transfer_nbytes(different, "up") - x.nbytes
    # up: the SuperLink's list of objects to push names every position (the equal Array and
    # its chunk twice), so the two messages differ by exactly the two pushes `same` skips
    from flwr.proto.message_pb2 import PushObjectRequest, PushObjectResponse
    from flwr.proto.node_pb2 import Node

    md = different.metadata
    skipped = [o for k, o in get_all_nested_objects(different).items()
               if k not in get_all_nested_objects(same)
               and type(o).__name__ in ("Array", "ArrayChunk")]
    assert len(skipped) == 2

    def push(nbytes: int) -> int:
        request = PushObjectRequest(node=Node(node_id=md.src_node_id), run_id=md.run_id,
                                    object_id="0" * 64, session_id=SESSION_ID)
        return (request.ByteSize() + PushObjectResponse(stored=True).ByteSize()
                + 1 + _varint(nbytes) + nbytes)

    assert (transfer_nbytes(different, "up") - transfer_nbytes(same, "up")
            == sum(push(len(o.deflate())) for o in skipped))


def test_tags():
    assert message_tag(_payload_message(3)) == "scores"
    weights = Message(content=RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(3))})}),
                      dst_node_id=1, message_type="train")
    assert message_tag(weights) == "weights"
    control = Message(content=RecordDict({"config": ConfigRecord({"a": 1})}), dst_node_id=1,
                      message_type="evaluate")
    assert message_tag(control) == "control"


class FakeGrid(Grid):
    """Answers every message with a small metrics reply, at once."""

    def __init__(self) -> None:
        self.pending: dict[str, Message] = {}

    def set_run(self, run): ...
    @property
    def run(self): return None
    def create_message(self, *a, **k): raise NotImplementedError
    def get_node_ids(self) -> Iterable[int]: return [7, 8]
    def get_nodes(self): return []

    def push_messages(self, messages):
        ids = []
        for i, m in enumerate(messages):
            mid = f"m{len(self.pending)}-{i}"
            m.metadata.__dict__["_message_id"] = mid
            m.metadata.__dict__["_src_node_id"] = 1
            self.pending[mid] = m
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        out = []
        for mid in list(message_ids):
            if mid in self.pending:
                ins = self.pending.pop(mid)
                out.append(Message(RecordDict({"metrics": MetricRecord({"ok": 1.0})}),
                                   reply_to=ins))
        return out

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("MeteredGrid must not delegate send_and_receive (it would bypass "
                             "the meter)")


def test_metered_grid_counts_both_legs_and_the_relay_once_as_p2p():
    meter = MeteredGrid(FakeGrid())
    meter.set_round(3)
    msg = _payload_message(100, dst=7)
    msg.content[CONFIG_KEY] = ConfigRecord({RELAY_FROM_KEY: 8})
    size = transfer_nbytes(msg, "down")
    replies = list(meter.send_and_receive([msg], timeout=5))
    assert len(replies) == 1
    wire = [e for e in meter.entries if e.kind == "wire"]
    p2p = [e for e in meter.entries if e.kind == "p2p"]
    assert [(e.direction, e.node_id, e.tag, e.round) for e in wire] == [
        ("down", 7, "scores", 3), ("up", 7, "control", 3)]
    assert wire[0].nbytes == size
    assert wire[1].nbytes == transfer_nbytes(replies[0], "up")
    # the relayed payload crosses a direct link once: received by 7, sent by 8
    assert sorted((e.direction, e.node_id, e.peer_id, e.nbytes) for e in p2p) == [
        ("down", 7, 8, size), ("up", 8, 7, size)]


def test_a_relay_of_several_payloads_splits_its_bytes_by_payload_size():
    from flower_gd.codecs import payload_key

    meter = MeteredGrid(FakeGrid())
    small = _payload_message(100)
    msg = _payload_message(300, dst=7)
    msg.content[payload_key(1)] = small.content["inference"]
    msg.content[CONFIG_KEY] = ConfigRecord({RELAY_FROM_KEY: [8, 9]})
    size = transfer_nbytes(msg, "down")
    list(meter.send_and_receive([msg], timeout=5))
    down = {e.peer_id: e.nbytes for e in meter.entries if e.kind == "p2p" and e.direction == "down"}
    up = {e.node_id: e.nbytes for e in meter.entries if e.kind == "p2p" and e.direction == "up"}
    assert down == up and set(down) == {8, 9}
    assert down[8] + down[9] == size  # every byte attributed once
    # payload 0 has 300 rows, payload 1 has 100: (12128 + framing) / (4128 + framing)
    assert 2.6 < down[8] / down[9] < 2.95
