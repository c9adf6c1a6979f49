"""cassandra-driver 3.x: one ``cassandra.query`` span per statement, ending when its result arrives.

``Session.execute`` is ``Session.execute_async(...).result()``, and every statement sent by
``execute_async`` gets a ``ResponseFuture``; the driver completes that future on its event-loop
thread through ``_set_final_result`` or ``_set_final_exception``. So the probes sit on the
future, not on the session:

- ``ResponseFuture.__init__`` starts the span (a child of the span active in the caller),
  stores it on the future and does not leave it active, since the caller goes on before the
  result arrives. Futures without a statement (``Session.prepare``) get no span.
- ``_set_final_result`` and ``_set_final_exception`` finish it, before the driver wakes the
  caller, so ``execute`` returns with its span already finished. A paged result's later pages
  (``fetch_next_page``) reuse the future and are not traced again.

These probes start or finish a span as a side effect and return no span of their own, which
is why ``on_call`` returns None. The driver's modules are compiled with Cython, so the probes
are ``wrapt`` wrappers on the class (the registry falls back to them by itself).

Span: name ``cassandra.query``, service ``cassandra``, type ``cassandra``; resource = the CQL
text (a prepared statement keeps its ``?``), or ``BatchStatement`` for a batch, with tag
``cassandra.query`` = its first two plain statements joined by ``; `` and metric
``cassandra.batch_size``. Tags ``cassandra.keyspace``, ``cassandra.cluster``,
``cassandra.consistency_level`` (when the statement sets one), ``cassandra.paginated``
(``"True"`` when more pages remain), ``db.system``, ``out.host``, ``server.address`` (the
coordinator); metrics ``db.row_count`` (rows of the first page), ``network.destination.port``.
A Pin on the ``Session`` applies to its spans.
"""

from __future__ import annotations

from typing import Any

from ddagent.context import ACTIVE_SPAN
from ddagent.hooks.registry import FunctionProbe, Integration

MAX_QUERY_LENGTH = 5000
BATCH_QUERIES_SHOWN = 2
_SPAN_ATTR = "_ddagent_span"


def _start_query_span(integration: Integration, future: Any, session: Any, message: Any,
                      query: Any, *later_params: Any) -> None:
    if query is None or session is None:
        return None
    resource, tags, metrics = _describe(query)
    tags.update({
        "cassandra.keyspace": getattr(query, "keyspace", None) or session.keyspace,
        "cassandra.cluster": _cluster_name(session),
        "cassandra.consistency_level": _consistency_name(query),
        "db.system": "cassandra",
    })
    caller_active = ACTIVE_SPAN.get()
    span = integration.start_span(session, "cassandra.query", resource=resource,
                                  span_type="cassandra", tags=tags, metrics=metrics)
    if span is not None:
        ACTIVE_SPAN.set(caller_active)  # the caller continues while the query runs
        setattr(future, _SPAN_ATTR, span)
    return None


def _finish_with_result(integration: Integration, future: Any, response: Any,
                        *later_params: Any) -> None:
    span = _take_span(future)
    if span is not None:
        rows = len(response) if isinstance(response, (list, tuple)) else 0
        span.set_metric("db.row_count", rows)
        span.set_tag("cassandra.paginated", str(future._paging_state is not None))
        _finish(span, future)
    return None


def _finish_with_error(integration: Integration, future: Any, error: Any,
                       *later_params: Any) -> None:
    span = _take_span(future)
    if span is not None:
        if isinstance(error, BaseException):
            span.set_exc_info(type(error), error, error.__traceback__)
        _finish(span, future)
    return None


def _take_span(future: Any) -> Any:
    # The future's own dict, so a span is finished once even if the driver calls both hooks.
    return vars(future).pop(_SPAN_ATTR, None)


def _finish(span: Any, future: Any) -> None:
    endpoint = getattr(getattr(future, "_current_host", None), "endpoint", None)
    if endpoint is not None:
        span.set_tag("out.host", endpoint.address)
        span.set_tag("server.address", endpoint.address)
        span.set_metric("network.destination.port", endpoint.port)
    span.finish()


def _describe(query: Any) -> tuple[str, dict, dict]:
    """(resource, tags, metrics) that depend on the kind of statement."""
    statements = getattr(query, "_statements_and_parameters", None)
    if statements is not None:  # a BatchStatement
        plain = [text for is_prepared, text, _ in statements if not is_prepared]
        shown = "; ".join(plain[:BATCH_QUERIES_SHOWN])
        return ("BatchStatement", {"cassandra.query": _cut(shown) if shown else None},
                {"cassandra.batch_size": len(statements)})
    if isinstance(query, str):
        text = query
    else:
        prepared = getattr(query, "prepared_statement", None)  # a BoundStatement
        text = getattr(prepared or query, "query_string", None) or str(query)
    return _cut(text), {}, {}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_QUERY_LENGTH else text[:MAX_QUERY_LENGTH] + "..."


def _cluster_name(session: Any) -> Any:
    return getattr(getattr(session.cluster, "metadata", None), "cluster_name", None)


def _consistency_name(query: Any) -> Any:
    level = getattr(query, "consistency_level", None)
    if level is None:
        return None
    from cassandra import ConsistencyLevel  # the driver is imported when its futures exist

    return ConsistencyLevel.value_to_name.get(level, str(level))


integration = Integration(
    "cassandra",
    service="cassandra",
    probes=[
        FunctionProbe("cassandra.cluster", "ResponseFuture.__init__",
                      on_call=_start_query_span),
        FunctionProbe("cassandra.cluster", "ResponseFuture._set_final_result",
                      on_call=_finish_with_result),
        FunctionProbe("cassandra.cluster", "ResponseFuture._set_final_exception",
                      on_call=_finish_with_error),
    ],
)
