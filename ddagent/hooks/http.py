"""HTTP facts shared by the server (``hooks/wsgi.py``, ``hooks/asgi.py``) and client (requests,
urllib3) layers.

- Which status codes mark a span as an error: ``DD_TRACE_HTTP_SERVER_ERROR_STATUSES``
  (default ``500-599``) and ``DD_TRACE_HTTP_CLIENT_ERROR_STATUSES`` (default ``400-499``), as
  Datadog documents them. The form is ranges and codes separated by commas: ``500-599,429``.
- The ``http.url`` tag: ``scheme://host[:port]/path``, never the credentials, query or fragment.
- The server request span, whatever the protocol: :func:`start_server_request` starts it from
  what a protocol layer reads off its request (method, URL, user agent, propagation headers),
  :func:`set_route` names it, :func:`finish_request` ends it (status, 5xx and exception rules).
  The span is kept in the request's dict (the WSGI environ, the ASGI scope) at
  :data:`REQUEST_SPAN`, so a second layer for the same request starts nothing.
- The client span protocol: one outbound call is one span, even when requests sits on top of
  urllib3, and nothing is traced while the writer talks to the agent.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from ddagent.context import ACTIVE_SPAN
from ddagent.hooks.registry import global_tracer
from ddagent.pin import PIN_ATTR
from ddagent.propagation import (
    HTTP_HEADER_ORIGIN,
    HTTP_HEADER_PARENT_ID,
    HTTP_HEADER_SAMPLING_PRIORITY,
    HTTP_HEADER_TAGS,
    HTTP_HEADER_TRACE_ID,
    HTTP_HEADER_TRACEPARENT,
    HTTP_HEADER_TRACESTATE,
    HTTPPropagator,
)
from ddagent.suppress import SUPPRESSED

if TYPE_CHECKING:
    from ddagent.hooks.registry import Integration
    from ddagent.span import Span

log = logging.getLogger(__name__)

CLIENT_SPAN_TYPE = "http"


def _status_codes(var: str, default: str) -> frozenset[int]:
    raw = os.environ.get(var, "").strip() or default
    codes: set[int] = set()
    try:
        for part in raw.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if not 100 <= first <= last <= 599:
                raise ValueError(part)
            codes.update(range(first, last + 1))
    except ValueError:
        log.warning("ddagent: ignoring %s=%r; the accepted form is status codes and ranges "
                    "separated by commas, e.g. '500-599,429'; using %s", var, raw, default)
        return _status_codes("", default)
    return frozenset(codes)


SERVER_ERROR_STATUSES = _status_codes("DD_TRACE_HTTP_SERVER_ERROR_STATUSES", "500-599")
CLIENT_ERROR_STATUSES = _status_codes("DD_TRACE_HTTP_CLIENT_ERROR_STATUSES", "400-499")


def status_code(status: Any) -> Optional[int]:
    """The integer code of a status given as ``200``, ``"200 OK"`` or an HTTPStatus; else None."""
    try:
        return int(str(int(status) if isinstance(status, int) else status).split(None, 1)[0])
    except (TypeError, ValueError, IndexError):
        return None


def url_tag(url: str) -> str:
    """``url`` without credentials, query or fragment (the ``http.url`` tag)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


def may_trace_client_call() -> bool:
    """False inside the writer's own sending, and inside another HTTP client's span."""
    if SUPPRESSED.get():
        return False
    active = ACTIVE_SPAN.get()
    return (active is None or active.finished or active.span_type != CLIENT_SPAN_TYPE
            or active.meta.get("span.kind") != "client")


def client_span(integration: Integration, pin_from: Any, span_name: str, method: str,
                url: str, headers: Any) -> Any:
    """Start an HTTP client span for ``method url`` and inject its context into ``headers``."""
    if not may_trace_client_call():
        return None
    parts = urllib.parse.urlsplit(url)
    span = integration.start_span(
        pin_from, span_name, resource=f"{method} {parts.path or '/'}", span_type=CLIENT_SPAN_TYPE,
        tags={"http.method": method, "http.url": url_tag(url), "out.host": parts.hostname},
    )
    if span is not None and headers is not None:
        HTTPPropagator.inject(span, headers)
    return span


def record_status(span: Any, status: Any) -> None:
    """Tag the response status; client error statuses mark the span."""
    if isinstance(status, int):
        span.set_tag("http.status_code", str(status))
        if status in CLIENT_ERROR_STATUSES:
            span.error = 1


# -- the server request span (shared by hooks/wsgi.py and hooks/asgi.py) -----------------------

REQUEST_SPAN = "ddagent.request_span"  # the key of the request's span in its environ or scope

# The headers trace context is extracted from (lowercase).
PROPAGATION_HEADERS = (HTTP_HEADER_TRACE_ID, HTTP_HEADER_PARENT_ID, HTTP_HEADER_SAMPLING_PRIORITY,
                       HTTP_HEADER_ORIGIN, HTTP_HEADER_TAGS, HTTP_HEADER_TRACEPARENT,
                       HTTP_HEADER_TRACESTATE)

# What a protocol layer reads off its request dict: (method, http.url, user agent or None,
# the propagation headers present or None).
RequestFacts = Tuple[str, str, Optional[str], Optional[dict]]


def request_span(carrier: Any) -> Optional[Span]:
    """The span of the request whose environ or scope is ``carrier``, if it is traced."""
    return carrier.get(REQUEST_SPAN) if isinstance(carrier, dict) else None


def start_server_request(
    integration: Integration,
    carrier: dict,
    read: Callable[[dict], RequestFacts],
    *,
    tracer: Any = None,
    service: Optional[str] = None,
    pin_from: object = None,
) -> Optional[Span]:
    """Start and activate the request span of ``carrier`` (a WSGI environ, an ASGI scope).

    ``read(carrier)`` gives the request's facts; it runs only when the request is traced.
    Returns None when the request must not be traced here: another layer already traces it,
    the Pin or the tracer is disabled, or the layer itself failed (counted, logged).
    """
    if carrier.get(REQUEST_SPAN) is not None:
        return None
    span = None
    try:
        # Pin.get_from inlined: a Python call less per request.
        pin = getattr(pin_from, PIN_ATTR, None)
        if pin is None and pin_from is not None:
            get_pin = getattr(pin_from, "__getddpin__", None)
            if get_pin is not None:
                pin = get_pin()
        if pin is not None and not pin.enabled():
            return None
        if tracer is None:
            tracer = pin.tracer if pin is not None else None
            if tracer is None:
                tracer = global_tracer()
        if not tracer.enabled:
            return None
        service = service or (pin.service if pin is not None else None)
        if not service:
            # The registry's read of DD_<NAME>_SERVICE (os.environ.get would cost ~1.2 us a
            # request), else DD_SERVICE, else the integration's default.
            service = integration.configured_service()
            if not service:
                config = getattr(tracer, "config", None)
                if config is not None and config.sources.get("service") == "env DD_SERVICE":
                    service = config.service
                else:
                    service = integration.service
        method, url, user_agent, headers = read(carrier)
        parent = HTTPPropagator.extract(headers) if headers else None
        span = tracer.trace(integration.name + ".request", child_of=parent, span_type="web",
                            service=service)
        span.resource = method
        # Straight into meta: these values are strs, so set_tag's conversion is not needed.
        meta = span.meta
        meta["component"] = integration.component
        meta["span.kind"] = "server"
        meta["http.method"] = method
        meta["http.url"] = url
        if user_agent:
            meta["http.useragent"] = user_agent
        span.metrics["_dd.measured"] = 1.0  # a float, as set_metric would store it
        if pin is not None and pin.tags:
            for key, value in pin.tags.items():
                span.set_tag(key, value)
        carrier[REQUEST_SPAN] = span
        return span
    except Exception as exc:
        integration.probe_failed(exc)
        if span is not None:
            span.finish()
        return None


def set_route(span: Optional[Span], route: str, resource_name: Optional[str] = None) -> None:
    """Name the request after its route: ``http.route`` and resource ``METHOD <resource_name
    or route>``. Does nothing for an untraced request (``span`` None)."""
    if span is None:
        return
    if type(route) is str:  # as set_tag would store it, without its call
        span.meta["http.route"] = route
    else:
        span.set_tag("http.route", route)
    span.resource = f"{span.meta.get('http.method')} {resource_name or route}"


def finish_request(span: Span, integration: Integration, exc: Optional[BaseException] = None,
                   status: Any = None) -> None:
    """End the request span: record ``exc`` and ``status``, mark 5xx, name unrouted requests.

    Does nothing if the span has ended already."""
    if span.finished:
        return
    try:
        meta = span.meta
        if status is not None:
            set_status(span, status)
        if exc is not None and not isinstance(exc, GeneratorExit):
            span.set_exc_info(type(exc), exc, exc.__traceback__)
            meta.setdefault("http.status_code", "500")
        tag = meta.get("http.status_code")
        code = _STATUS_CODES.get(tag) or status_code(tag)
        if code in SERVER_ERROR_STATUSES:
            span.error = 1
        if code == 404 and "http.route" not in meta:
            span.resource = f"{meta.get('http.method')} 404"
    except Exception as error:
        integration.probe_failed(error)
    span.finish()


# The status codes by their tag ("200" -> 200), so the usual statuses are read without
# status_code()'s parsing: about 0.3 us twice a request.
_STATUS_CODES = {str(code): code for code in range(100, 600)}


def set_status(span: Span, status: Any) -> None:
    """Tag ``http.status_code`` from a status given as ``200``, ``"200 OK"`` or an HTTPStatus."""
    if type(status) is str:
        code = status[:3]
        if code in _STATUS_CODES and status[3:4] in (" ", ""):
            span.meta["http.status_code"] = code  # "200 OK", as status_code() would read it
            return
    code = status_code(status)
    if code is not None:
        span.meta["http.status_code"] = str(code)


# url_tag of "scheme://host/" per (scheme, host): parsing the host is most of the tag's cost and
# a server sees few hosts. Bounded, as the Host header comes from the client.
_BASE_URLS: dict[tuple[str, str], str] = {}
_BASE_URLS_MAX = 256
_HOST_DELIMITERS = frozenset("/?#\\")
# What quote() leaves alone in a path (with "/" safe): a path made only of these is its own
# quoted form, which spares quote()'s three Python calls on nearly every request.
UNQUOTED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/"


def server_host(scheme: str, host: Optional[str], server_name: str, port: str) -> str:
    """The request's host: its Host header, else the server's name with a non-default port."""
    if host:
        return host
    if port != ("443" if scheme == "https" else "80"):
        return f"{server_name}:{port}"
    return server_name


def base_url(scheme: str, host: str) -> Optional[str]:
    """``url_tag("scheme://host/")`` without its final slash; None for a host that holds a URL
    delimiter (the caller then builds the whole URL and passes it to :func:`url_tag`)."""
    base = _BASE_URLS.get((scheme, host))  # only hosts that pass the check below are cached
    if base is None:
        if not _HOST_DELIMITERS.isdisjoint(host):
            return None
        base = url_tag(f"{scheme}://{host}/")[:-1]
        if len(_BASE_URLS) < _BASE_URLS_MAX:
            _BASE_URLS[(scheme, host)] = base
    return base
