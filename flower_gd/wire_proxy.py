"""A byte-counting TCP proxy for checking the meter against the wire (insecure mode only).

It sits on loopback between SuperNodes and the SuperLink and forwards every byte unchanged.
In flwr 1.41 a SuperNode talks to the SuperLink's Fleet API over HTTP/1.1 (httpx), one
POST per call with a serialized protobuf request as its body (`/v1/fleet/push-object`,
`/v1/fleet/pull-messages`, `/v1/fleet/send-node-heartbeat`, ...). Each direction of each
connection is parsed as HTTP/1.1 messages, so every byte is filed under the call it belongs
to (the request's path; responses follow their requests in order) and as either HTTP
framing (start line, headers, chunk sizes) or body (the protobuf message). A poll that
brings no message (a `pull-messages` call whose response lists none) is filed, request and
response, as `idle` instead of `body`: the SuperNodes poll all the time, whether or not
there is anything to fetch.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict, deque
from typing import Any

from flwr.proto.fleet_pb2 import PullMessagesResponse

HEAD_END = b"\r\n\r\n"
POLL_PATH = "/v1/fleet/pull-messages"


class _Call:
    """One request on a connection: its path and, once read, its body's size."""

    def __init__(self, path: str) -> None:
        self.path, self.body = path, 0


class _Stream:
    """Parses one direction of one connection as it streams past."""

    def __init__(self, proxy: WireProxy, direction: str, calls: deque[_Call]) -> None:
        self.proxy, self.direction, self.calls = proxy, direction, calls
        self.buffer = bytearray()
        self.state = "head"  # head | body | chunk-size | chunk-data | chunk-end
        self.left = 0  # body or chunk bytes still to come
        self.call = _Call("?")
        self.body = bytearray()  # a poll's response, kept until it is complete

    @property
    def path(self) -> str:
        return self.call.path

    def feed(self, chunk: bytes) -> None:
        with self.proxy.lock:
            self.proxy.totals[self.direction] += len(chunk)
            self.buffer += chunk
            while self._step():
                pass

    def _take(self, kind: str, nbytes: int) -> None:
        self.proxy.counts[(self.direction, self.path, kind)] += nbytes
        if kind == "body":
            if self.direction == "up":
                self.call.body += nbytes
            elif self.path == POLL_PATH:
                self.body += self.buffer[:nbytes]
        del self.buffer[:nbytes]

    def _end_of_message(self) -> None:
        """A request or response is complete; file an empty poll's bytes as idle."""
        if self.direction == "down" and self.path == POLL_PATH:
            if not PullMessagesResponse.FromString(bytes(self.body)).messages_list:
                counts = self.proxy.counts
                for direction, nbytes in (("up", self.call.body), ("down", len(self.body))):
                    counts[(direction, self.path, "body")] -= nbytes
                    counts[(direction, self.path, "idle")] += nbytes
            self.body.clear()

    def _step(self) -> bool:
        """Consume the next piece (a head, body bytes, a chunk line) if it is all here."""
        if self.state in ("body", "chunk-data"):
            n = min(self.left, len(self.buffer))
            if n:
                self._take("body", n)
                self.left -= n
            if self.left == 0:
                if self.state == "body":
                    self.state = "head"
                    self._end_of_message()
                else:
                    self.state = "chunk-end"
                return True
            return bool(n)
        line_end = self.buffer.find(b"\r\n")
        if self.state == "chunk-end":  # the CRLF after a chunk's data
            if len(self.buffer) < 2:
                return False
            self._take("framing", 2)
            self.state = "chunk-size"
            return True
        if self.state == "chunk-size":
            if line_end < 0:
                return False
            size = int(bytes(self.buffer[:line_end]).split(b";")[0] or b"0", 16)
            self._take("framing", line_end + 2)
            self.left = size
            self.state = "chunk-data" if size else "chunk-end-last"
            return True
        if self.state == "chunk-end-last":  # the empty line after the last (0) chunk
            if len(self.buffer) < 2:
                return False
            self._take("framing", 2)
            self.state = "head"
            self._end_of_message()
            return True
        end = self.buffer.find(HEAD_END)
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1")
        start, *fields = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        if self.direction == "up":  # "POST /v1/fleet/push-object HTTP/1.1"
            self.call = _Call(start.split(" ")[1] if " " in start else "?")
            self.calls.append(self.call)
            self.proxy.calls[self.path] += 1
        else:  # a response answers the oldest request still waiting on this connection
            self.call = self.calls.popleft() if self.calls else _Call("?")
        self._take("framing", end + len(HEAD_END))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self.state = "chunk-size"
        else:
            self.left = int(headers.get("content-length", "0") or 0)
            self.state = "body" if self.left else "head"
            if not self.left:
                self._end_of_message()
        return True


class WireProxy:
    """Forward `listen_port` -> `target_port` on 127.0.0.1, counting what crosses.

    `up` is SuperNode -> SuperLink. Use as a context manager; `reset()` starts counting
    afresh, `snapshot()` copies the counts.
    """

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.lock = threading.Lock()
        self.totals: dict[str, int] = defaultdict(int)
        self.counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._server = socket.create_server(("127.0.0.1", listen_port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> WireProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()

    def reset(self) -> None:
        with self.lock:
            self.totals.clear()
            self.counts.clear()
            self.calls.clear()

    def snapshot(self) -> dict[str, Any]:
        """Bytes each way, and per call path: framing and body bytes each way, calls."""
        with self.lock:
            paths: dict[str, dict[str, int]] = defaultdict(dict)
            for (direction, path, kind), n in self.counts.items():
                paths[path][f"{kind}-{direction}"] = n
            for path, n in self.calls.items():
                paths[path]["calls"] = n
            return {"up": self.totals["up"], "down": self.totals["down"],
                    "paths": {p: dict(sorted(v.items())) for p, v in sorted(paths.items())}}

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the SuperLink is not up yet: the SuperNode will dial again
                client.close()
                continue
            waiting: deque[_Call] = deque()  # requests awaiting their response
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                stream = _Stream(self, direction, waiting)
                threading.Thread(target=_pump, args=(src, dst, stream), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket, stream: _Stream) -> None:
    try:
        while chunk := src.recv(65536):
            stream.feed(chunk)
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
