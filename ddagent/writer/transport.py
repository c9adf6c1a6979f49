"""HTTP to the trace agent: one keep-alive urllib3 connection, over TCP or a Unix socket.

The transport sends one body and reports what the agent answered; the writer decides about
retries and drops. It downgrades ``/v0.4/traces`` to ``/v0.3/traces`` once and for good when the
agent answers 404 or 415 (an old agent), resending that body once.

While it talks to the agent, :data:`ddagent.suppress.SUPPRESSED` is true in the calling context,
so that ddagent's own HTTP integrations leave the writer's requests untraced.
"""

from __future__ import annotations

import json
import platform
import socket
import traceback
import urllib.parse
from typing import NamedTuple, Optional

import urllib3
from urllib3.connection import HTTPConnection

from ddagent.suppress import SUPPRESSED
from ddagent.version import __version__

V04_ENDPOINT = "/v0.4/traces"
V03_ENDPOINT = "/v0.3/traces"

# Sent with every payload; the agent uses them for its stats and the test agent checks some.
_STATIC_HEADERS = {
    "Content-Type": "application/msgpack",
    "Datadog-Meta-Lang": "python",
    "Datadog-Meta-Lang-Version": platform.python_version(),
    "Datadog-Meta-Lang-Interpreter": platform.python_implementation(),
    "Datadog-Meta-Tracer-Version": __version__,
    # ddagent's tracer marks top-level spans (`_dd.top_level`) itself; this tells the agent so.
    "Datadog-Client-Computed-Top-Level": "yes",
}


class Response(NamedTuple):
    status: int
    body: bytes


class UnixHTTPConnection(HTTPConnection):
    """An urllib3 connection whose socket is an AF_UNIX stream to ``socket_path``."""

    def __init__(self, *args: object, socket_path: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # urllib3 sets self.timeout to the connect timeout before connecting.
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise urllib3.exceptions.NewConnectionError(
                self, f"Failed to connect to unix socket {self.socket_path}: {e}"
            ) from e
        return sock


class UnixHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = UnixHTTPConnection


def _connection_pool(url: str, timeout: float) -> urllib3.HTTPConnectionPool:
    """A one-connection keep-alive pool for an ``http://``, ``https://`` or ``unix://`` URL."""
    parsed = urllib.parse.urlsplit(url)
    # One connection is enough (one sender at a time); block=False never makes a caller wait for it.
    options = dict(maxsize=1, block=False, retries=False, timeout=urllib3.Timeout(timeout))
    if parsed.scheme == "unix":
        path = parsed.path or parsed.netloc
        if not path:
            raise ValueError(f"agent URL {url!r} has no socket path (unix:///path/apm.socket)")
        # The Host header is "localhost"; the socket path is what is dialled.
        return UnixHTTPConnectionPool("localhost", socket_path=path, **options)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"agent URL {url!r} is not http://host:port, https://host:port or unix:///path"
        )
    if parsed.scheme == "https":
        return urllib3.HTTPSConnectionPool(parsed.hostname, parsed.port, **options)
    return urllib3.HTTPConnectionPool(parsed.hostname, parsed.port, **options)


class AgentTransport:
    """Sends trace payloads to one agent URL. Not thread-safe: the writer sends from one place."""

    def __init__(self, url: str, timeout: float = 2.0, endpoint: str = V04_ENDPOINT) -> None:
        self.url = url
        self.timeout = timeout
        self.endpoint = endpoint
        self._pool = _connection_pool(url, timeout)

    def send_traces(self, body: bytes, trace_count: int, timeout: float | None = None) -> Response:
        """PUT one payload; return the agent's answer, read to the end.

        ``timeout`` caps connect plus read (for deadlines shorter than the configured timeout).
        Connection failures and timeouts raise ``urllib3.exceptions.HTTPError`` or ``OSError``.
        """
        headers = dict(_STATIC_HEADERS)
        headers["X-Datadog-Trace-Count"] = str(trace_count)
        headers["Content-Length"] = str(len(body))
        response = self._put(body, headers, timeout)
        if response.status in (404, 415) and self.endpoint == V04_ENDPOINT:
            self.endpoint = V03_ENDPOINT
            response = self._put(body, headers, timeout)
        return response

    def _put(self, body: bytes, headers: dict[str, str], timeout: float | None) -> Response:
        limit = self.timeout if timeout is None else max(min(timeout, self.timeout), 0.001)
        token = SUPPRESSED.set(True)
        try:
            # preload_content reads the whole answer and puts the connection back for keep-alive.
            response = self._pool.urlopen(
                "PUT",
                self.endpoint,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(total=limit, connect=limit, read=limit),
                chunked=False,
                preload_content=True,
                redirect=False,
            )
        except BaseException as error:
            _clear_frames(error)
            raise
        finally:
            SUPPRESSED.reset(token)
        return Response(response.status, response.data or b"")

    def close(self) -> None:
        self._pool.close()


def _clear_frames(error: BaseException) -> None:
    """Free the locals of the frames a failed request went through.

    urllib3 keeps the exception it raises in a local of a frame it passes through, a reference
    cycle that holds the request body (megabytes) until the cyclic garbage collector runs. With
    the agent down every payload fails, and those bodies pile up in memory.
    """
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def parse_rate_by_service(body: bytes) -> Optional[dict[str, float]]:
    """The ``rate_by_service`` of an agent's JSON answer, or None if it has none or is garbage."""
    try:
        rates = json.loads(body).get("rate_by_service")
    except (ValueError, AttributeError):
        return None
    if not isinstance(rates, dict):
        return None
    parsed = {}
    for key, rate in rates.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            return None
        parsed[key] = float(rate)
    return parsed
