"""The ASGI request layer: the counterpart of ``hooks/wsgi.py`` for asyncio servers.

One HTTP request (``scope["type"] == "http"``) is one span, ``<integration name>.request``,
with the same name, service, resource and tags as the WSGI layer gives the same framework (the
shared part lives in ``hooks/http.py``):

- **Start.** Trace context from the ``scope["headers"]`` propagation headers (Datadog and W3C,
  through :class:`~ddagent.propagation.HTTPPropagator`). Tags ``component``, ``span.kind``,
  ``http.method``, ``http.url`` (``scheme://host/path`` from the Host header, else
  ``scope["server"]``; no query), ``http.useragent``; metric ``_dd.measured``.
- **Status.** Read from the ``http.response.start`` message the application sends
  (``http.status_code``). Statuses in ``DD_TRACE_HTTP_SERVER_ERROR_STATUSES`` (5xx) are
  errors; an exception escaping the application is recorded and counts as a 500.
- **Active and end.** The span is the active span of the request's task for the whole call, so
  everything the application awaits (and ``sync_to_async`` code, which runs in a copy of the
  context) is its child. It ends when the application's coroutine returns or raises, that is
  after the response body was sent.
- **Once.** The span is stored in ``scope[REQUEST_SPAN]``; an inner layer for the same request
  starts nothing.

``lifespan`` and ``websocket`` scopes pass through untraced. The application's exceptions
propagate unchanged; a failure of ddagent's own code is counted in
``probes.errors.<integration>`` and the request goes on untraced.

A framework plugs in with ``ASGIAppProbe("<module>", "<Class>.__call__")`` (a method taking
``(scope, receive, send)``; the Pin is looked up on its ``self``) or :func:`trace_asgi_call`,
then names the request with :func:`~ddagent.hooks.http.set_route` on
``request_span(scope)``, as under WSGI.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote

from ddagent.hooks.http import (
    PROPAGATION_HEADERS,
    UNQUOTED,
    RequestFacts,
    base_url,
    finish_request,
    request_span,
    server_host,
    set_status,
    start_server_request,
    url_tag,
)
from ddagent.hooks.registry import Integration
from ddagent.hooks.wrappers import AroundProbe
from ddagent.span import Span

__all__ = ["ASGIAppProbe", "request_span", "start_request", "trace_asgi_call"]

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]

# The propagation headers as ASGI spells header names: lowercase bytes.
_PROPAGATION_NAMES = {header.encode("latin1"): header for header in PROPAGATION_HEADERS}


def start_request(
    integration: Integration,
    scope: dict,
    *,
    tracer: Any = None,
    service: Optional[str] = None,
    pin_from: object = None,
) -> Optional[Span]:
    """Start and activate the request span for the HTTP ``scope``; None when it is not traced
    here (see :func:`~ddagent.hooks.http.start_server_request`)."""
    return start_server_request(integration, scope, _read_scope, tracer=tracer,
                                service=service, pin_from=pin_from)


def _read_scope(scope: dict) -> RequestFacts:
    host = user_agent = None
    propagation = None
    headers = scope.get("headers") or ()
    if not isinstance(headers, (list, tuple)):
        # The spec allows any iterables (falcon.testing passes one-shot iterators, of pairs
        # that are iterators too): read here, they would be empty for the application. The
        # same pairs, as a list of tuples.
        headers = scope["headers"] = [tuple(pair) for pair in headers]
    # One pass over the headers: (name, value) byte pairs.
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin1")
        elif name == b"user-agent":
            user_agent = value.decode("latin1")
        elif name in _PROPAGATION_NAMES:
            if propagation is None:
                propagation = {}
            propagation[_PROPAGATION_NAMES[name]] = value.decode("latin1")
    return (scope.get("method") or "GET", _url(scope, host), user_agent, propagation)


def _url(scope: dict, host: Optional[str]) -> str:
    """``http.url`` as the WSGI layer would give it for the same request."""
    scheme = scope.get("scheme") or "http"
    server = scope.get("server") or ("", None)
    if not isinstance(server, (list, tuple)):  # any iterable, as for the headers
        server = scope["server"] = tuple(server)
    host = server_host(scheme, host, str(server[0] or ""),
                       "" if server[1] is None else str(server[1]))
    path = scope.get("path") or "/"
    root_path = scope.get("root_path") or ""
    if root_path and not path.startswith(root_path):  # servers that keep them apart
        path = root_path + path
    # The path is decoded as UTF-8 here (latin-1 under WSGI): quoting each gives the same bytes.
    if path.strip(UNQUOTED + ";=,"):
        path = quote(path, safe="/;=,")
    base = base_url(scheme, host)
    if base is None:
        return url_tag(f"{scheme}://{host}{path}")
    return base + path


async def trace_asgi_call(
    integration: Integration,
    app: ASGIApp,
    scope: dict,
    receive: Callable,
    send: Callable,
    *,
    tracer: Any = None,
    service: Optional[str] = None,
    pin_from: object = None,
) -> Any:
    """Await the ASGI ``app`` for one connection, tracing it if it is an HTTP request."""
    span = None
    if isinstance(scope, dict) and scope.get("type") == "http":
        span = start_request(integration, scope, tracer=tracer, service=service,
                             pin_from=pin_from)
    if span is None:
        return await app(scope, receive, send)

    async def traced_send(message: Any) -> Any:
        try:
            if message.get("type") == "http.response.start":
                set_status(span, message.get("status"))
        except Exception as error:
            integration.probe_failed(error)
        return await send(message)

    try:
        result = await app(scope, receive, traced_send)
    except BaseException as exc:
        finish_request(span, integration, exc)
        raise
    finish_request(span, integration)
    return result


# -- probes ------------------------------------------------------------------------------------


def _around_asgi_app(integration: Integration, wrapped: Callable, instance: Any, args: tuple,
                     kwargs: dict) -> Any:
    if len(args) != 3 or kwargs:  # not the ASGI 3 calling convention: leave it alone
        return wrapped(*args, **kwargs)
    scope, receive, send = args
    return trace_asgi_call(integration, wrapped, scope, receive, send, pin_from=instance)


class ASGIAppProbe(AroundProbe):
    """Trace the ASGI 3 entry point ``path``: an async ``"Class.method"`` taking
    ``(scope, receive, send)``."""

    def __init__(self, module: str, path: str) -> None:
        super().__init__(module, path, _around_asgi_app)

