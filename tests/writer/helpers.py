"""Stand-ins for the writer's tests: a duck-typed span and a scriptable local HTTP "agent"."""

from __future__ import annotations

import http.server
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class FakeSpan:
    """Exactly the attributes the writer's encoder reads (docs/architecture.md)."""

    trace_id: int
    span_id: int
    parent_id: Optional[int]
    name: str = "op"
    service: Optional[str] = "writer-test"
    resource: Optional[str] = "res"
    span_type: Optional[str] = None
    start_ns: int = field(default_factory=time.time_ns)
    duration_ns: int = 1000
    error: int = 0
    meta: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def new_id() -> int:
    return random.getrandbits(63) + 1


def make_trace(spans: int = 2, service: str = "writer-test", **root_attrs: object) -> list:
    """A chain of ``spans`` spans (each the child of the previous one); root first."""
    trace_id = (int(time.time()) << 96) | random.getrandbits(64)
    trace = [FakeSpan(trace_id, new_id(), None, name="root", service=service, **root_attrs)]
    for i in range(1, spans):
        trace.append(FakeSpan(trace_id, new_id(), trace[-1].span_id, name=f"child{i}",
                              service=service))
    return trace


class LocalAgent:
    """A tiny HTTP server answering trace PUTs as told: status per path, optional stall.

    ``statuses`` is consumed one answer per request (the last one repeats).
    """

    def __init__(self, statuses: tuple[int, ...] = (200,), stall: float = 0.0,
                 v03_status: int = 200) -> None:
        self.statuses = list(statuses)
        self.stall = stall
        self.v03_status = v03_status
        self.requests: list[tuple[str, dict, bytes]] = []
        self._release = threading.Event()
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real agent

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                agent.requests.append((self.path, dict(self.headers), body))
                if agent.stall:
                    agent._release.wait(agent.stall)
                if self.path == "/v0.3/traces":
                    status = agent.v03_status
                else:
                    status = agent.statuses.pop(0) if len(agent.statuses) > 1 else agent.statuses[0]
                answer = json.dumps({"rate_by_service": {"service:,env:": 1.0}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the writer timed out and hung up

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true (a worker may still be finishing a send after ``stop``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
