"""elasticsearch-py 7.17, 8.x and 9.x: one ``elasticsearch.query`` span per API call.

Every API method of a client ends in one method, probed by rewriting its code:

- 8.x and 9.x: ``BaseClient.perform_request(method, path, *, params, headers, body, ...)``
  (namespaced clients such as ``client.indices`` delegate to it). It returns a response whose
  ``meta.status`` is the HTTP status, and raises the client's ``ApiError`` subclasses
  (``NotFoundError``, ...) for error statuses.
- 7.17: ``Transport.perform_request(method, url, headers, params, body)``, which returns the
  decoded body and raises ``TransportError`` subclasses carrying ``status_code``. The product
  check's ``GET /`` that 7.17 sends before the first request is inside the first span.

Span: name ``elasticsearch.query``, service ``elasticsearch``, type ``elasticsearch``;
resource ``<METHOD> <path>`` with ids replaced by ``?``: numeric segments and the document id
after ``_doc``, ``_create``, ``_update``, ``_source`` (``PUT /logs/_doc/?``). Tags
``elasticsearch.method``, ``elasticsearch.url`` (the path as sent), ``elasticsearch.params``
(the URL-encoded query string, ``""`` when none), ``elasticsearch.body`` (JSON of the request
body of searches and counts, left out above ``MAX_BODY_LENGTH``), ``http.status_code``,
``out.host``, ``server.address``; metric ``elasticsearch.took`` (from search results). An
error status raises the client's exception, which marks the span (its message carries the
status).
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Mapping, Optional
from urllib.parse import urlencode

from ddagent.hooks.registry import FunctionProbe, Integration

MAX_BODY_LENGTH = 10_000
# The segment after one of these is a document id.
_ID_BEFORE = frozenset({"_doc", "_create", "_update", "_source", "_explain", "_termvectors"})
# Endpoints whose body is a query (recorded); other bodies are documents (not recorded).
_QUERY_ENDPOINTS = ("_search", "_msearch", "_count", "_validate", "_knn_search",
                    "_async_search", "_search_template", "_delete_by_query",
                    "_update_by_query")


def _client_span(integration: Integration, client: Any, method: str, path: str,
                 params: Optional[Mapping], headers: Any, body: Any, *later: Any) -> Any:
    return _start(integration, client, _first_host(client.transport), method, path, params,
                  body)


def _transport_span(integration: Integration, transport: Any, method: str, url: str,
                    headers: Any, params: Optional[Mapping], body: Any) -> Any:
    return _start(integration, transport, _first_host(transport), method, url, params, body)


def _start(integration: Integration, pin_from: Any, host: Optional[str], method: str,
           path: str, params: Optional[Mapping], body: Any) -> Any:
    return integration.start_span(
        pin_from, "elasticsearch.query", resource=f"{method} {quantize_path(path)}",
        span_type="elasticsearch",
        tags={"elasticsearch.method": method, "elasticsearch.url": path,
              "elasticsearch.params": urlencode(params or {}, doseq=True),
              "elasticsearch.body": _query_body(path, body),
              "out.host": host, "server.address": host},
    )


def _record_response(span: Any, response: Any, *params: Any) -> None:
    meta = getattr(response, "meta", None)  # 8.x/9.x ApiResponse; 7.x returns the body itself
    if meta is not None:
        span.set_tag("http.status_code", str(meta.status))
    body = getattr(response, "body", response)
    if isinstance(body, Mapping) and isinstance(body.get("took"), (int, float)):
        span.set_metric("elasticsearch.took", body["took"])


def quantize_path(path: str) -> str:
    """The path without its query, with numeric segments and document ids replaced by ``?``."""
    segments = path.split("?", 1)[0].split("/")
    out = []
    for i, segment in enumerate(segments):
        is_id = segment.isdigit() or (i > 0 and segments[i - 1] in _ID_BEFORE and segment)
        out.append("?" if is_id else segment)
    return "/".join(out)


def _query_body(path: str, body: Any) -> Optional[str]:
    if body is None or not any(endpoint in path for endpoint in _QUERY_ENDPOINTS):
        return None
    if isinstance(body, bytes):
        text = body.decode("utf-8", errors="backslashreplace")
    elif isinstance(body, str):
        text = body
    else:
        text = json.dumps(body, default=str)
    return text if len(text) <= MAX_BODY_LENGTH else None


def _first_host(transport: Any) -> Optional[str]:
    """The first configured node's host (the transport picks the node for each request)."""
    node_pool = getattr(transport, "node_pool", None)
    if node_pool is not None:  # elastic_transport (8.x, 9.x)
        nodes = node_pool.all()
        return nodes[0].config.host if nodes else None
    hosts = getattr(transport, "hosts", None) or [{}]  # 7.x
    return hosts[0].get("host")


class _Transport7Probe(FunctionProbe):
    """The 7.x ``Transport``; in 8.x ``elasticsearch.transport`` re-exports elastic_transport's."""

    def install(self, module: ModuleType, integration: Integration) -> Any:
        if module.Transport.__module__ != module.__name__:
            return None
        return super().install(module, integration)


integration = Integration(
    "elasticsearch",
    service="elasticsearch",
    probes=[
        FunctionProbe("elasticsearch._sync.client._base", "BaseClient.perform_request",
                      on_call=_client_span, on_return=_record_response),
        _Transport7Probe("elasticsearch.transport", "Transport.perform_request",
                      on_call=_transport_span, on_return=_record_response),
    ],
)
