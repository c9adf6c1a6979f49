"""SQLAlchemy engines: ``<vendor>.query`` spans (service = vendor) from engine events.

Off in ``patch_all()`` (as in the seed); ``patch(sqlalchemy=True)`` turns it on. It listens on
the ``Engine`` class, so every engine is traced, including engines created before: a statement
starts its span in ``before_cursor_execute`` and ends it in ``after_cursor_execute``, or in
``handle_error``, which records the driver's exception (the application gets SQLAlchemy's
exception wrapping it, as always). These public events exist in SQLAlchemy 1.4 and 2.x.

Span: name ``<vendor>.query`` (``postgres.query``, ``mysql.query``, ``sqlite.query``), service
the vendor (``DD_SQLALCHEMY_SERVICE`` or a Pin on the engine win), type ``sql``, resource the
statement as sent to the driver, normalised (``ddagent/sql.py``); tags ``component=sqlalchemy``,
``db.system``, ``db.name``, ``db.user``, ``out.host`` from the engine URL (never its password);
metrics ``network.destination.port`` (when the URL has one) and ``db.row_count``.

**No double counting.** When the driver's integration is on too (``psycopg``, ``mysql``, ...),
each statement SQLAlchemy executes still gives one span: SQLAlchemy's. The driver layer sees
:data:`~ddagent.hooks.dbapi.OUTER_QUERY_SPAN` and makes no span for that statement. What the
dialect sends on its own through the raw DB-API connection (``select pg_catalog.version()``
when a connection is first made, pool pings) does get driver spans, as it is not in an engine
statement.

Disabling removes the listener that starts spans; the two that finish them stay registered
(they do nothing without a started span) so statements in flight in other threads still close
their spans.

The seed's ``trace_engine(engine, tracer=None, service=None)`` puts a Pin with that service and
tracer on the engine and switches this integration on (which traces every engine; the seed
traced only that one).
"""

from __future__ import annotations

import contextvars
from types import ModuleType
from typing import Any, Callable, Optional

from ddagent.ext.sql import normalize_vendor
from ddagent.hooks import registry
from ddagent.hooks.dbapi import OUTER_QUERY_SPAN, query_resource, record_row_count
from ddagent.hooks.registry import Integration

# The token of the statement running in this context, and how to put OUTER_QUERY_SPAN back.
_STATEMENT: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar(
    "ddagent_sqlalchemy_statement", default=None)

_DB_SYSTEMS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql",
               "sqlite": "sqlite", "mssql": "mssql", "oracle": "oracle"}


def _statement_span(integration: Integration, connection: Any, statement: str) -> Any:
    engine = connection.engine
    url = engine.url
    vendor = normalize_vendor(engine.name)
    span = integration.start_span(
        engine, f"{vendor}.query", span_type="sql",
        tags={"db.system": _DB_SYSTEMS.get(engine.name, engine.name), "db.name": url.database,
              "db.user": url.username, "out.host": url.host, "server.address": url.host},
        metrics={"network.destination.port": url.port},
    )
    if span is not None:
        if span.service == integration.service:  # neither a Pin nor DD_SQLALCHEMY_SERVICE
            span.service = vendor
        span.resource = query_resource(statement, span)
    return span


def _before_cursor_execute(connection: Any, cursor: Any, statement: str, parameters: Any,
                           context: Any, executemany: bool) -> None:
    token = integration.enter(_statement_span, (connection, statement))
    if token is not None:
        _STATEMENT.set((token, OUTER_QUERY_SPAN.set(token[0])))


def _after_cursor_execute(connection: Any, cursor: Any, statement: str, parameters: Any,
                          context: Any, executemany: bool) -> None:
    _end_statement(cursor, None)


def _handle_error(exception_context: Any) -> None:
    _end_statement(None, exception_context.original_exception)


def _end_statement(cursor: Any, error: Optional[BaseException]) -> None:
    running = _STATEMENT.get()
    if running is None:
        return
    token, outer_reset = running
    _STATEMENT.set(None)
    try:
        OUTER_QUERY_SPAN.reset(outer_reset)
    except ValueError:  # set in another context (should not happen): clear it here
        OUTER_QUERY_SPAN.set(None)
    integration.exit(_record_row_count, token, cursor, error)


def _record_row_count(span: Any, cursor: Any, connection: Any, statement: str) -> None:
    record_row_count(span, cursor)


class EngineEventsProbe:
    """Listen to the statement events of every ``Engine`` (see the module docstring)."""

    module = "sqlalchemy.engine"

    def install(self, module: ModuleType, integration: Integration) -> Callable[[], None]:
        from sqlalchemy import event

        engine_class = module.Engine
        for name, listener in (("after_cursor_execute", _after_cursor_execute),
                               ("handle_error", _handle_error)):
            if not event.contains(engine_class, name, listener):
                event.listen(engine_class, name, listener)
        event.listen(engine_class, "before_cursor_execute", _before_cursor_execute)
        return lambda: event.remove(engine_class, "before_cursor_execute", _before_cursor_execute)


def trace_engine(engine: Any, tracer: Any = None, service: Optional[str] = None) -> None:
    """The seed's API: trace ``engine`` (with this tracer and service, if given)."""
    from ddagent.pin import Pin

    Pin.override(engine, service=service, tracer=tracer)
    registry.enable("sqlalchemy")


integration = Integration(
    "sqlalchemy",
    service="sqlalchemy",  # replaced by the engine's vendor unless configured
    probes=[EngineEventsProbe()],
)
