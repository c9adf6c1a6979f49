"""FaultProxy: an HTTP proxy between the tracer and the real test agent that misbehaves on cue.

The proxy listens on a loopback port and reads each request whole (headers and Content-Length
body). What happens next depends on its current :class:`Fault`, which a test changes at any time:

- ``FORWARD``: pass the request to the upstream agent and relay its answer (healthy).
- ``REFUSE``: the listening socket is closed, so connecting fails with ECONNREFUSED (a request
  on a connection kept alive from before is closed unanswered).
- ``RESET``: the request is read half way, then the connection is reset (RST, no answer).
- ``STALL``: the request is read and nothing is answered until ``stall_seconds`` pass or the
  fault changes; then the connection is closed.
- ``STATUS_500``, ``STATUS_413``, ``STATUS_404``: answer that status without forwarding.

A request the proxy fails is never forwarded, so the agent never receives a payload the tracer
believes lost: ``received + dropped == created`` can then hold to the span. (A timeout *after*
the agent took a payload is ambiguous for any HTTP client and would make the writer's retry a
duplicate; the proxy does not simulate it.)

Like an old agent, the proxy accepts ``/v0.3/traces`` and forwards it to ``/v0.4/traces`` (same
body), because the writer moves to ``/v0.3`` for good after a 404 and the test agent has no v0.3.
"""

from __future__ import annotations

import enum
import http.client
import random
import socket
import struct
import threading
from collections import Counter


class Fault(enum.Enum):
    FORWARD = "forward"
    REFUSE = "refuse"
    RESET = "reset"
    STALL = "stall"
    STATUS_500 = 500
    STATUS_413 = 413
    STATUS_404 = 404


class FaultProxy:
    """A fault-injecting HTTP proxy to ``upstream_port`` on 127.0.0.1. Call :meth:`close`."""

    def __init__(self, upstream_port: int, stall_seconds: float = 30.0) -> None:
        self.upstream_port = upstream_port
        self.stall_seconds = stall_seconds
        self.seen: Counter[str] = Counter()  # requests per fault they met, for the test's report
        self._fault = Fault.FORWARD
        self._changed = threading.Event()  # set on every fault change, to end stalls early
        self._lock = threading.Lock()
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._listener = self._listen_on_a_free_port()
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    # -- control --------------------------------------------------------------------------

    @property
    def fault(self) -> Fault:
        return self._fault

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            previous, self._fault = self._fault, fault
            changed, self._changed = self._changed, threading.Event()
            if fault is Fault.REFUSE and previous is not Fault.REFUSE:
                self._listener.close()
            elif previous is Fault.REFUSE and fault is not Fault.REFUSE:
                self._listener = self._listen(self.port)
        changed.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._listener.close()
            for conn in list(self._connections):
                _close_quietly(conn)
        self._changed.set()

    # -- serving --------------------------------------------------------------------------

    def _listen_on_a_free_port(self) -> socket.socket:
        # Below Linux's ephemeral range (32768-60999), so that while the proxy refuses, no
        # outgoing connection can take its port and make the recovery's bind fail.
        for _ in range(100):
            try:
                return self._listen(random.randrange(20000, 32000))
            except OSError:
                continue
        return self._listen(0)

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True,
                         name=f"faultproxy-accept-{port}").start()
        return listener

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: REFUSE or close()
                return
            with self._lock:
                if self._closed:
                    _close_quietly(conn)
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="faultproxy-conn").start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._closed:
                head = _read_head(reader)
                if head is None:
                    return
                method, path, headers = head
                length = int(headers.get("content-length", "0"))
                fault, changed = self._fault, self._changed
                self.seen[fault.name] += 1
                if fault is Fault.RESET:
                    reader.read(length // 2)
                    _reset(conn)
                    return
                body = reader.read(length)
                if fault is Fault.REFUSE:  # a kept-alive connection: the agent went away
                    return
                if fault is Fault.STALL:
                    changed.wait(self.stall_seconds)
                    return
                if isinstance(fault.value, int):
                    conn.sendall(_response(fault.value, b'{"error": "injected by faultproxy"}'))
                    continue
                status, answer = self._forward(method, path, headers, body)
                conn.sendall(_response(status, answer))
        except OSError:
            return
        finally:
            reader.close()
            with self._lock:
                self._connections.discard(conn)
            _close_quietly(conn)

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, bytes]:
        if path.startswith("/v0.3/traces"):
            path = "/v0.4/traces" + path[len("/v0.3/traces"):]
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            skip = {"host", "connection", "content-length"}
            upstream.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                if name not in skip:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            return response.status, response.read()
        finally:
            upstream.close()


def _read_head(reader) -> tuple[str, str, dict[str, str]] | None:
    request_line = reader.readline()
    if not request_line:
        return None
    method, path, _ = request_line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _response(status: int, body: bytes) -> bytes:
    reason = http.client.responses.get(status, "Unknown")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("latin-1") + body


def _reset(conn: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close_quietly(conn)


def _close_quietly(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass
