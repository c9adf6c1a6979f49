"""The DB-API 2.0 layer shared by database driver integrations.

A driver integration describes its database once with :class:`Database`: the span name, the
``db.system`` value, how to read host/port/database/user from a new connection and, if the
driver has them, how to tell a server-side cursor. It then lists probes made by the
:class:`Database`:

- :meth:`Database.connect_probe`: ``module.connect(...)`` (or a ``Class.connect`` classmethod)
  returns a :class:`TracedConnection` proxy; ``asynchronous=True`` for ``async`` connect
  methods, which give :class:`AsyncTracedConnection` proxies.
- :meth:`Database.real_objects_probe`: a C function that type-checks its arguments (psycopg2's
  ``register_type``) receives the driver's own connection or cursor instead of the proxy.

Connections hand out traced cursors. Every ``execute``, ``executemany``, ``executescript`` and
``callproc`` becomes a ``<vendor>.query`` span (type ``sql``; resource = the query text,
normalised by ``ddagent/sql.py`` unless ``DD_TRACE_SQL_NORMALIZE=false``; metric
``db.row_count`` = the cursor's ``rowcount``). On a server-side cursor, where each fetch is a
round trip, ``fetchone``/``fetchmany``/``fetchall`` become ``<vendor>.query.<method>`` spans
with the query as resource and the rows fetched as ``db.row_count``. Errors are recorded on the
span and re-raised unchanged. Connection passwords are never read.

The proxies are ``wrapt.ObjectProxy`` objects: ``isinstance(conn, psycopg2.extensions.connection)``
stays true, every other attribute passes through, and ``with conn:`` / ``with conn.cursor() as
cur:`` (``async with`` too) keep yielding proxies. They check the integration switch on every
call, so connections opened before a ``disable`` stop producing spans at once.

A layer above the driver that traces the statement itself (SQLAlchemy) sets
:data:`OUTER_QUERY_SPAN` to its span around the driver call; while that span is unfinished no
driver span is made: one statement, one ``<vendor>.query`` span.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, NamedTuple, Optional

import wrapt

from ddagent.hooks.wrappers import AroundProbe, WrapperProbe, call_probed, call_probed_async
from ddagent.sql import normalize_query

if TYPE_CHECKING:
    from ddagent.hooks.registry import Integration, OnCall, OnReturn, SpanTags

OUTER_QUERY_SPAN: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "ddagent_outer_query_span", default=None)
"""The span a layer above the driver made for the statement being executed (while unfinished)."""


class ConnectionInfo(NamedTuple):
    """Where a connection goes; None for what the driver does not know (sqlite: all of it)."""

    host: Optional[str] = None
    port: Optional[int] = None
    database: Optional[str] = None
    user: Optional[str] = None


Describe = Callable[[Any, tuple, dict], ConnectionInfo]  # (connection, connect args, kwargs)


class Database:
    """One database product as seen by its driver integration.

    ``span_name`` e.g. ``"postgres.query"``; ``system`` the ``db.system`` tag
    (``"postgresql"``); ``describe(connection, args, kwargs)`` reads the peer from a new
    connection; ``server_side(cursor)`` is true for cursors whose fetches go to the server.
    """

    def __init__(self, *, span_name: str, system: str, describe: Describe | None = None,
                 server_side: Callable[[Any], bool] | None = None) -> None:
        self.span_name = span_name
        self.system = system
        self.describe = describe
        self.server_side = server_side

    def connect_probe(self, module: str, attr: str = "connect", *,
                      asynchronous: bool = False) -> Any:
        """A probe that makes ``module.attr(...)`` return traced connections.

        ``attr`` may be ``"Class.method"`` (a connect classmethod, e.g. psycopg 3's
        ``Connection.connect``); ``asynchronous`` for a coroutine that gives the connection.
        """
        if asynchronous:
            return AroundProbe(module, attr, self._connect_async)
        if "." in attr:
            return AroundProbe(module, attr, self._connect)
        return WrapperProbe(module, attr, on_result=self._trace_connection)

    def real_objects_probe(self, module: str, attr: str) -> AroundProbe:
        """A probe that passes ``module.attr`` the driver's own objects instead of proxies.

        It stays in force while the integration is disabled: connections opened before are
        still proxies.
        """
        return AroundProbe(module, attr, _call_with_real_objects, always=True)

    def _connect(self, integration: Integration, connect: Callable, owner: Any, args: tuple,
                 kwargs: dict) -> Any:
        connection = connect(*args, **kwargs)
        return _guarded(integration, self._trace_connection, connection, args, kwargs)

    def _connect_async(self, integration: Integration, connect: Callable, owner: Any,
                       args: tuple, kwargs: dict) -> Awaitable:
        async def connect_traced() -> Any:
            connection = await connect(*args, **kwargs)
            return _guarded(integration, self._trace_connection, connection, args, kwargs,
                            AsyncTracedConnection)

        return connect_traced()

    def _trace_connection(self, integration: Integration, connection: Any, args: tuple,
                          kwargs: dict, proxy_class: type | None = None) -> Any:
        if isinstance(connection, _TracedProxy):  # connect() called through two probed names
            return connection
        info = self.describe(connection, args, kwargs) if self.describe else ConnectionInfo()
        tags = {
            "db.system": self.system,
            "out.host": info.host,
            "server.address": info.host,
            "db.name": info.database,
            "db.user": info.user,
        }
        preset = integration.span_tags(tags, {"network.destination.port": info.port})
        context = _QueryContext(integration, self, tags, preset)
        return proxy_for(proxy_class or TracedConnection, connection, context)


def instances_of(module: str, class_name: str) -> Callable[[Any], bool]:
    """A ``server_side`` test: the cursor is an instance of ``module.class_name``.

    False while ``module`` is not imported (then no cursor can be one)."""
    def is_instance(cursor: Any) -> bool:
        loaded = sys.modules.get(module)
        return loaded is not None and isinstance(cursor, getattr(loaded, class_name))

    return is_instance


def _guarded(integration: Integration, trace: Callable, connection: Any, *args: Any) -> Any:
    """``trace(integration, connection, ...)``; the plain connection if disabled or it fails."""
    if not integration.enabled:
        return connection
    try:
        return trace(integration, connection, *args)
    except Exception as exc:
        integration.probe_failed(exc)
        return connection


def _call_with_real_objects(integration: Integration, function: Callable, owner: Any,
                            args: tuple, kwargs: dict) -> Any:
    return function(*(_real(a) for a in args), **{k: _real(v) for k, v in kwargs.items()})


def _real(value: Any) -> Any:
    return value.__wrapped__ if isinstance(value, _TracedProxy) else value


class _Absent:
    """Hides a proxy method the wrapped object lacks, so ``hasattr(proxy, name)`` stays false
    (psycopg2's ``_solve_conn_curs`` tells connections from cursors by ``execute``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        raise AttributeError(self.name)


# At most two entries (with and without __getddpin__) per driver class: bounded.
_PROXY_CLASSES: dict[tuple[type, type, bool], type] = {}


def proxy_for(proxy_class: type, wrapped: Any, context: _QueryContext) -> Any:
    """A ``proxy_class`` proxy of ``wrapped``, without the traced methods ``wrapped`` lacks."""
    # Pin.get_from asks for __getddpin__ on every traced call. Through the proxy the usual miss
    # would raise and catch an AttributeError in the driver's object (~1.8 us a query), so the
    # driver object's answer is looked up once: proxies of objects without one get a class
    # whose __getddpin__ is None (no call at all), the others one that returns it.
    getddpin = getattr(wrapped, "__getddpin__", None)
    key = (proxy_class, type(wrapped), getddpin is None)
    cls = _PROXY_CLASSES.get(key)
    if cls is None:
        namespace: dict[str, Any] = {name: _Absent() for name in proxy_class._self_optional
                                     if not hasattr(type(wrapped), name)}
        if getddpin is None:
            namespace["__getddpin__"] = None
        cls = type(proxy_class.__name__, (proxy_class,), namespace) if namespace else proxy_class
        _PROXY_CLASSES[key] = cls
    proxy = cls(wrapped, context)
    if getddpin is not None:
        proxy._self_getddpin = getddpin
    return proxy


class _QueryContext(NamedTuple):
    """What every span of one connection (and its cursors) shares."""

    integration: Integration
    database: Database
    tags: dict  # as given, None values included (tag_connection keeps what is set here)
    preset: SpanTags  # tags and metrics converted once, for Integration.start_span


class _TracedProxy(wrapt.ObjectProxy):
    # A Pin set on the proxy stays on the proxy (C connections cannot hold attributes).
    _datadog_pin = None

    # The same lookup as wrapt's own (the proxy's attributes, then the wrapped object's through
    # ObjectProxy.__getattr__), but CPython calls it directly: wrapt's C __getattribute__,
    # inherited by a Python subclass, is called through a new method-wrapper object at every
    # attribute read, on the proxy's own ``_self_*`` attributes too (~10 per traced query).
    __getattribute__ = object.__getattribute__

    def __init__(self, wrapped: Any, context: _QueryContext) -> None:
        super().__init__(wrapped)
        self._self_context = context
        self._self_query: Any = None  # the last query executed (a server cursor's fetches)
        self._self_getddpin: Any = None  # the wrapped object's __getddpin__ (see proxy_for)

    @property
    def __getddpin__(self) -> Any:
        return self._self_getddpin

    def _self_probe_args(self, method: str, query: Any, args: tuple,
                         kwargs: dict) -> tuple[Integration, OnCall, tuple, Callable, OnReturn]:
        """What ``call_probed`` needs to run ``method(query, ...)`` on the wrapped object."""
        self._self_query = query
        # A partial, not a lambda: calling it costs no Python frame of its own.
        return (self._self_context.integration, _start_query_span, (self, query),
                functools.partial(getattr(self.__wrapped__, method), query, *args, **kwargs),
                _record_row_count)

    def _self_traced(self, method: str, query: Any, args: tuple, kwargs: dict) -> Any:
        """``method(query, ...)`` on the wrapped object in a query span; the object itself
        (execute() may return it) comes back as the proxy."""
        result = call_probed(*self._self_probe_args(method, query, args, kwargs))
        return self if result is self.__wrapped__ else result

    def _self_same(self, result: Any) -> Any:
        # execute() and __enter__ may return the object itself: hand back the proxy instead.
        return self if result is self.__wrapped__ else result


class TracedCursor(_TracedProxy):
    """A DB-API cursor whose query methods produce spans."""

    _self_optional = ("execute", "executemany", "executescript", "callproc", "fetchone",
                      "fetchmany", "fetchall")

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_traced("execute", query, args, kwargs)

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_traced("executemany", query, args, kwargs)

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_traced("executescript", script, args, kwargs)

    def callproc(self, procname: Any, *args: Any, **kwargs: Any) -> Any:
        return call_probed(*self._self_probe_args("callproc", procname, args, kwargs))

    def fetchone(self) -> Any:
        return self._self_fetch("fetchone", ())

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_fetch("fetchmany", args, kwargs)

    def fetchall(self) -> Any:
        return self._self_fetch("fetchall", ())

    def _self_fetch(self, method: str, args: tuple, kwargs: dict | None = None) -> Any:
        call = getattr(self.__wrapped__, method)
        server_side = self._self_context.database.server_side
        if server_side is None or not server_side(self.__wrapped__):
            return call(*args, **(kwargs or {}))
        return call_probed(self._self_context.integration, _start_fetch_span, (self, method),
                           lambda: call(*args, **(kwargs or {})), _record_fetched_rows)

    def __enter__(self) -> Any:
        return self._self_same(self.__wrapped__.__enter__())


class TracedConnection(_TracedProxy):
    """A DB-API connection whose cursors are traced, as are its ``execute*`` shortcuts."""

    _self_optional = ("execute", "executemany", "executescript")

    def cursor(self, *args: Any, **kwargs: Any) -> TracedCursor:
        return self._self_cursor(self.__wrapped__.cursor(*args, **kwargs))

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor(
            call_probed(*self._self_probe_args("execute", query, args, kwargs)))

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor(
            call_probed(*self._self_probe_args("executemany", query, args, kwargs)))

    def executescript(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_cursor(
            call_probed(*self._self_probe_args("executescript", script, args, kwargs)))

    def __enter__(self) -> Any:
        return self._self_same(self.__wrapped__.__enter__())

    def _self_cursor(self, cursor: Any, proxy_class: type | None = None) -> Any:
        proxy = proxy_for(proxy_class or TracedCursor, cursor, self._self_context)
        if self._datadog_pin is not None:
            proxy._datadog_pin = self._datadog_pin
        return proxy


# -- asyncio drivers (psycopg 3's AsyncConnection) --------------------------------------------

class AsyncTracedCursor(_TracedProxy):
    """An asyncio cursor whose query coroutines produce spans (fetches are not traced)."""

    _self_optional = ("execute", "executemany", "callproc")

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_same(
            await call_probed_async(*self._self_probe_args("execute", query, args, kwargs)))

    async def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._self_same(
            await call_probed_async(*self._self_probe_args("executemany", query, args, kwargs)))

    async def callproc(self, procname: Any, *args: Any, **kwargs: Any) -> Any:
        return await call_probed_async(*self._self_probe_args("callproc", procname, args, kwargs))

    async def __aenter__(self) -> Any:
        return self._self_same(await self.__wrapped__.__aenter__())

    def __aiter__(self) -> Any:
        return self.__wrapped__.__aiter__()


class AsyncTracedConnection(TracedConnection):
    """An asyncio connection: ``cursor()`` gives traced async cursors, ``await execute()``."""

    def cursor(self, *args: Any, **kwargs: Any) -> AsyncTracedCursor:
        return self._self_cursor(self.__wrapped__.cursor(*args, **kwargs), AsyncTracedCursor)

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = await call_probed_async(*self._self_probe_args("execute", query, args, kwargs))
        return self._self_cursor(cursor, AsyncTracedCursor)

    async def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return await call_probed_async(
            *self._self_probe_args("executemany", query, args, kwargs))

    async def __aenter__(self) -> Any:
        return self._self_same(await self.__wrapped__.__aenter__())


# -- spans ------------------------------------------------------------------------------------

def _start_query_span(integration: Integration, traced: _TracedProxy, query: Any) -> Any:
    outer = OUTER_QUERY_SPAN.get()
    if outer is not None and not outer.finished:
        return None
    context = traced._self_context
    span = integration.start_span(traced, context.database.span_name, span_type="sql",
                                  preset=context.preset)
    if span is not None:
        text = query if type(query) is str else query_text(query, traced.__wrapped__)
        span.resource = query_resource(text, span)
    return span


def _start_fetch_span(integration: Integration, cursor: TracedCursor, method: str) -> Any:
    context = cursor._self_context
    span = integration.start_span(cursor, f"{context.database.span_name}.{method}",
                                  span_type="sql", preset=context.preset)
    if span is not None:
        span.resource = query_resource(query_text(cursor._self_query, cursor.__wrapped__), span)
    return span


def _record_row_count(span: Any, result: Any, traced: _TracedProxy, query: Any) -> None:
    # A cursor method reports on its own cursor; a connection shortcut returns the cursor.
    record_row_count(span, result if isinstance(traced, TracedConnection) else traced.__wrapped__)


def record_row_count(span: Any, cursor: Any) -> None:
    """Metric ``db.row_count`` = the DB-API cursor's ``rowcount``, when it has one."""
    rowcount = getattr(cursor, "rowcount", None)
    if isinstance(rowcount, int):
        span.metrics["db.row_count"] = float(rowcount)  # as set_metric stores it; always finite


def _record_fetched_rows(span: Any, rows: Any, cursor: TracedCursor, method: str) -> None:
    if method == "fetchone":
        span.set_metric("db.row_count", 0 if rows is None else 1)
    elif isinstance(rows, (list, tuple)):
        span.set_metric("db.row_count", len(rows))


def tag_connection(cursor: Any, tags: Mapping[str, Any]) -> bool:
    """Add ``tags`` to every span of a traced cursor's connection; False if it is not traced.

    For a layer above the driver (Django's database wrapper) that would otherwise trace the
    same query again. Tags the connection already has are kept. A cursor whose driver
    integration has been disabled since its connection opened counts as not traced.
    """
    if not isinstance(cursor, TracedCursor):
        return False
    context = cursor._self_context
    if not context.integration.enabled:
        return False
    added = {key: value for key, value in tags.items() if key not in context.tags}
    context.tags.update(added)
    context.preset.update(added)
    return True


def query_text(query: Any, context: Any = None) -> str:
    """The SQL of ``query``: text, bytes, or a composed statement (``psycopg.sql.Composed``).

    ``context`` is the driver's connection or cursor, which composed statements need to quote
    identifiers. Never raises.
    """
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray)):
        return bytes(query).decode("utf-8", errors="replace")
    as_string = getattr(query, "as_string", None)
    if as_string is not None and context is not None:
        try:
            return as_string(context)
        except Exception:
            pass  # not composable with this context: fall back to its str()
    try:
        return str(query)
    except Exception:
        return "?"


def query_resource(text: str, span: Any) -> str:
    """The resource for SQL ``text``: normalised unless the span's tracer config says not."""
    config = getattr(span.tracer, "config", None)
    if config is not None and not getattr(config, "sql_normalize", True):
        return text
    return normalize_query(text)
