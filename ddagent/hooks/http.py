"""HTTP facts shared by the server (``hooks/wsgi.py``) and client (requests, urllib3) layers.

- Which status codes mark a span as an error: ``DD_TRACE_HTTP_SERVER_ERROR_STATUSES``
  (default ``500-599``) and ``DD_TRACE_HTTP_CLIENT_ERROR_STATUSES`` (default ``400-499``), as
  Datadog documents them. The form is ranges and codes separated by commas: ``500-599,429``.
- The ``http.url`` tag: ``scheme://host[:port]/path``, never the credentials, query or fragment.
- The client span protocol: one outbound call is one span, even when requests sits on top of
  urllib3, and nothing is traced while the writer talks to the agent.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Optional

from ddagent.context import ACTIVE_SPAN
from ddagent.propagation import HTTPPropagator
from ddagent.suppress import SUPPRESSED

if TYPE_CHECKING:
    from ddagent.hooks.registry import Integration

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
