"""requests: a ``requests.request`` client span per ``Session.send``, which propagates the trace.

Span: service ``requests``, type ``http``, ``span.kind=client``; resource ``METHOD /path``;
tags ``http.method``, ``http.url`` (no credentials, query or fragment), ``out.host``,
``http.status_code``; statuses in ``DD_TRACE_HTTP_CLIENT_ERROR_STATUSES`` (4xx) mark an error,
as does an exception. The Datadog and W3C headers of the span are added to the outgoing
request, so the server's request span becomes its child. Nothing is traced while ddagent's
writer sends, and urllib3 underneath adds no second span (``hooks/http.py``).
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks.http import client_span, record_status
from ddagent.hooks.registry import FunctionProbe, Integration


def _send_span(integration: Integration, session: Any, request: Any, kwargs: dict) -> Any:
    return client_span(integration, session, "requests.request",
                       (request.method or "GET").upper(), request.url, request.headers)


def _record_response(span: Any, response: Any, *_params: Any) -> None:
    record_status(span, getattr(response, "status_code", None))


integration = Integration(
    "requests",
    service="requests",
    probes=[FunctionProbe("requests.sessions", "Session.send", on_call=_send_span,
                          on_return=_record_response)],
)
