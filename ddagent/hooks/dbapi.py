"""The DB-API 2.0 layer shared by database driver integrations.

A driver integration describes its database once with :class:`Database` (the span name, the
``db.system`` value, and how to read host/port/database/user from a new connection) and probes
its ``connect`` function with :meth:`Database.connect_probe`. Connections come back wrapped in a
:class:`TracedConnection` proxy, whose cursors are :class:`TracedCursor` proxies; every
``execute``, ``executemany``, ``executescript`` and ``callproc`` becomes a ``<vendor>.query``
span (type ``sql``, resource = the query text, metric ``db.row_count``).

The proxies are ``wrapt.ObjectProxy`` objects: ``isinstance(conn, sqlite3.Connection)`` stays
true, every other attribute passes through, and ``with conn:`` keeps yielding the proxy. They
check the integration switch on every call, so connections opened before a ``disable`` stop
producing spans at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import wrapt

from ddagent.hooks.wrappers import WrapperProbe, call_probed

if TYPE_CHECKING:
    from ddagent.hooks.registry import Integration


class ConnectionInfo(NamedTuple):
    """Where a connection goes; None for what the driver does not know (sqlite: all of it)."""

    host: Optional[str] = None
    port: Optional[int] = None
    database: Optional[str] = None
    user: Optional[str] = None


Describe = Callable[[Any, tuple, dict], ConnectionInfo]  # (connection, connect args, kwargs)


class Database:
    """One database product as seen by its driver integration.

    ``span_name`` e.g. ``"sqlite.query"``; ``system`` the ``db.system`` tag (``"sqlite"``);
    ``describe(connection, args, kwargs)`` reads the peer from a new connection.
    """

    def __init__(self, *, span_name: str, system: str, describe: Describe | None = None) -> None:
        self.span_name = span_name
        self.system = system
        self.describe = describe

    def connect_probe(self, module: str, attr: str = "connect") -> WrapperProbe:
        """A probe that makes ``module.attr(...)`` return traced connections."""
        return WrapperProbe(module, attr, on_result=self._trace_connection)

    def _trace_connection(self, integration: Integration, connection: Any,
                          args: tuple, kwargs: dict) -> TracedConnection:
        info = self.describe(connection, args, kwargs) if self.describe else ConnectionInfo()
        tags = {
            "db.system": self.system,
            "out.host": info.host,
            "server.address": info.host,
            "db.name": info.database,
            "db.user": info.user,
        }
        metrics = {"network.destination.port": info.port}
        return TracedConnection(connection, _QueryContext(integration, self, tags, metrics))


class _QueryContext(NamedTuple):
    """What every span of one connection (and its cursors) shares."""

    integration: Integration
    database: Database
    tags: dict
    metrics: dict


class _TracedProxy(wrapt.ObjectProxy):
    # A Pin set on the proxy stays on the proxy (C connections cannot hold attributes).
    _datadog_pin = None

    def __init__(self, wrapped: Any, context: _QueryContext) -> None:
        super().__init__(wrapped)
        self._self_context = context

    def _self_traced(self, method: str, query: Any, args: tuple, kwargs: dict) -> Any:
        call = getattr(self.__wrapped__, method)
        return call_probed(self._self_context.integration, _start_query_span, (self, query),
                           lambda: call(query, *args, **kwargs), _record_row_count)

    def _self_cursor_proxy(self, cursor: Any) -> TracedCursor:
        proxy = TracedCursor(cursor, self._self_context)
        if self._datadog_pin is not None:
            proxy._datadog_pin = self._datadog_pin
        return proxy


class TracedCursor(_TracedProxy):
    """A DB-API cursor whose query methods produce spans."""

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_same(self._self_traced("execute", query, args, kwargs))

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_same(self._self_traced("executemany", query, args, kwargs))

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_same(self._self_traced("executescript", script, args, kwargs))

    def callproc(self, procname: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_traced("callproc", procname, args, kwargs)

    def __enter__(self) -> Any:
        return self._self_same(self.__wrapped__.__enter__())

    def _self_same(self, result: Any) -> Any:
        # sqlite3's execute() returns the cursor itself: hand back the proxy, not the raw one.
        return self if result is self.__wrapped__ else result


class TracedConnection(_TracedProxy):
    """A DB-API connection whose cursors are traced, as are its ``execute*`` shortcuts."""

    def cursor(self, *args: Any, **kwargs: Any) -> TracedCursor:
        return self._self_cursor_proxy(self.__wrapped__.cursor(*args, **kwargs))

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor_proxy(self._self_traced("execute", query, args, kwargs))

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor_proxy(self._self_traced("executemany", query, args, kwargs))

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor_proxy(self._self_traced("executescript", script, args, kwargs))

    def __enter__(self) -> Any:
        result = self.__wrapped__.__enter__()
        return self if result is self.__wrapped__ else result


def _start_query_span(integration: Integration, traced: _TracedProxy, query: Any) -> Any:
    context = traced._self_context
    return integration.start_span(
        traced, context.database.span_name, resource=_query_text(query), span_type="sql",
        tags=context.tags, metrics=context.metrics,
    )


def _record_row_count(span: Any, result: Any, traced: _TracedProxy, query: Any) -> None:
    # A cursor method reports on its own cursor; a connection shortcut returns the cursor.
    cursor = traced.__wrapped__ if isinstance(traced, TracedCursor) else result
    rowcount = getattr(cursor, "rowcount", None)
    if isinstance(rowcount, int):
        span.set_metric("db.row_count", rowcount)


def _query_text(query: Any) -> str:
    if isinstance(query, bytes):
        return query.decode("utf-8", errors="replace")
    return query if isinstance(query, str) else str(query)
