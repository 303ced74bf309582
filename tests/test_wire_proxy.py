"""The byte-counting proxy: every byte forwarded, and filed by call and by framing or body."""

import http.client
import http.server
import threading

from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.proto.message_pb2 import Message

from flower_gd.deploy import free_port
from flower_gd.wire_proxy import POLL_PATH, WireProxy

# a poll's answer when there is a message for the node (it is never empty)
DELIVERY = PullMessagesResponse(messages_list=[Message()]).SerializeToString()


class _Fleet(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a body twice as long as the request's; a poll whose body is
    "idle" with no message, any other poll with one."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx talks to the SuperLink

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = body * 2
        if self.path == POLL_PATH:
            reply = b"" if body == b"idle" else DELIVERY
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_the_proxy_forwards_everything_and_files_each_byte_under_its_call():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Fleet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with WireProxy(free_port(), server.server_port) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.listen_port, timeout=10)
        sent = {"/v1/fleet/push-object": b"x" * 70_000, "/v1/fleet/send-node-heartbeat": b"hb"}
        for path, body in [*sent.items(), ("/v1/fleet/push-object", b"y" * 10)]:
            conn.request("POST", path, body=body)
            assert conn.getresponse().read() == body * 2  # forwarded unchanged, both ways
        conn.close()
        snap = proxy.snapshot()
    server.shutdown()
    push = snap["paths"]["/v1/fleet/push-object"]
    beat = snap["paths"]["/v1/fleet/send-node-heartbeat"]
    assert push["calls"] == 2 and beat["calls"] == 1
    assert push["body-up"] == 70_010 and push["body-down"] == 140_020
    assert beat["body-up"] == 2 and beat["body-down"] == 4
    # nothing lost between the two views: framing + bodies are all the bytes, each way
    for d in ("up", "down"):
        assert sum(v.get(f"framing-{d}", 0) + v.get(f"body-{d}", 0) + v.get(f"idle-{d}", 0)
                   for v in snap["paths"].values()) == snap[d]


def test_polls_that_bring_nothing_are_filed_as_idle():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Fleet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with WireProxy(free_port(), server.server_port) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.listen_port, timeout=10)
        for body in (b"idle", b"idle", b"fetch", b"idle"):
            conn.request("POST", POLL_PATH, body=body)
            conn.getresponse().read()
        conn.close()
        poll = proxy.snapshot()["paths"][POLL_PATH]
    server.shutdown()
    assert poll["calls"] == 4
    assert poll["idle-up"] == 3 * len(b"idle") and poll.get("idle-down", 0) == 0
    assert poll["body-up"] == len(b"fetch") and poll["body-down"] == len(DELIVERY) > 0
