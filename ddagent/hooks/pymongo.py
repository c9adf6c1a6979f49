"""PyMongo 4.x: one ``pymongo.cmd`` span per command sent to the server.

Every command leaves through one of three methods, probed by rewriting their code, in the
synchronous driver (``pymongo.synchronous``) and the same ones, as coroutines, in the asyncio
driver (``pymongo.asynchronous``, ``AsyncMongoClient``, 4.9+):

- ``Connection.command``: single commands (``insert`` of one document, ``update``, ``delete``,
  ``aggregate``, ``createIndexes``, ``findAndModify``, ``ping``, ...). Calls made with event
  publishing switched off are the driver's own handshake and heartbeat ``hello`` commands; they
  are not traced, so a monitor thread does not send a trace every 10 seconds.
- the ``find`` and ``getMore`` of cursors: ``_CursorBase._run_with_conn`` (pymongo 4.18+),
  ``Server.run_operation`` before (4.9 to 4.17).
- ``_Bulk.write_command``: batched writes (``insert_many``, ``bulk_write``).

All three are what pymongo's re-authentication decorator returns, a ``(*args, **kwargs)``
function, so the probes read the parameters from those; a call retried after
re-authentication is one span.
MongoEngine talks to the server through these same functions, so its operations appear as
these spans (see ``hooks/mongoengine.py``). Not covered: the ``MongoClient.bulk_write`` API of
MongoDB 8 and unacknowledged (``w=0``) bulk writes.

Span: name ``pymongo.cmd``, service ``pymongo``, type ``mongodb``; resource
``<command> <collection> <filter shape>``, where the filter shape is the command's filter as
JSON with every value replaced by ``"?"`` (``find users {"age": {"$gt": "?"}}``). Tags
``mongodb.db``, ``mongodb.collection``, ``mongodb.query`` (the shape), ``db.system``,
``out.host``, ``server.address``; metrics ``network.destination.port``, ``mongodb.documents``
(documents inserted), ``db.row_count`` (documents returned by a find or getMore). A Pin on the
``MongoClient`` applies to its spans. A write the server refuses (e.g. a duplicate key) comes
back as a reply with ``writeErrors``, from which pymongo raises later: the span is marked with
the exception type pymongo raises for it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from ddagent.hooks.registry import FunctionProbe, Integration

# Where each command keeps the filter that goes into the resource.
_FILTER_FIELD = {"find": "filter", "count": "query", "distinct": "query",
                 "findAndModify": "query", "findandmodify": "query"}
# Write commands whose statements each carry a filter ("q"); the first one is shown.
_STATEMENTS_FIELD = {"update": "updates", "delete": "deletes"}
_LIST_OPERATORS = frozenset({"$in", "$nin", "$all"})
MAX_QUERY_LENGTH = 1000


def _command_span(integration: Integration, args: tuple, kwargs: dict) -> Any:
    # Connection.command(self, dbname, spec, ..., client=, ..., publish_events=True, ...)
    if not _param(args, kwargs, 14, "publish_events", True):
        return None  # the driver's own handshake and heartbeat
    conn = args[0]
    return _start(integration, _param(args, kwargs, 12, "client"), conn,
                  _param(args, kwargs, 1, "dbname"), _param(args, kwargs, 2, "spec"))


def _operation_span(integration: Integration, args: tuple, kwargs: dict) -> Any:
    # Server.run_operation(self, conn, operation, read_preference, listeners, unpack_res, client)
    return _cursor_span(integration, _param(args, kwargs, 6, "client"),
                        _param(args, kwargs, 1, "conn"), _param(args, kwargs, 2, "operation"))


def _cursor_batch_span(integration: Integration, args: tuple, kwargs: dict) -> Any:
    # _CursorBase._run_with_conn(self, conn, operation, read_preference)
    cursor = args[0]
    return _cursor_span(integration, cursor._collection.database.client,
                        _param(args, kwargs, 1, "conn"), _param(args, kwargs, 2, "operation"))


def _cursor_span(integration: Integration, client: Any, conn: Any, operation: Any) -> Any:
    query = getattr(operation, "spec", None) if operation.name == "find" else None
    if isinstance(query, Mapping) and "$query" in query:  # the legacy wrapped form
        query = query["$query"]
    return _span(integration, client, conn, operation.name, operation.db, operation.coll, query)


def _bulk_span(integration: Integration, args: tuple, kwargs: dict) -> Any:
    # _Bulk.write_command(self, bwc, cmd, request_id, msg, docs, client)
    bwc, docs = _param(args, kwargs, 1, "bwc"), _param(args, kwargs, 5, "docs")
    span = _start(integration, _param(args, kwargs, 6, "client"), bwc.conn, bwc.db_name,
                  _param(args, kwargs, 2, "cmd"))
    if span is not None and bwc.field == "documents":
        span.set_metric("mongodb.documents", len(docs))
    return span


def _param(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    """A parameter of the decorated method, passed by position or by keyword."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _start(integration: Integration, client: Any, conn: Any, dbname: str, spec: Mapping) -> Any:
    name = next(iter(spec), "")
    collection = spec.get(name)
    query = None
    if name in _FILTER_FIELD:
        query = spec.get(_FILTER_FIELD[name])
    elif name in _STATEMENTS_FIELD:
        statements = spec.get(_STATEMENTS_FIELD[name]) or [{}]
        query = statements[0].get("q")
    elif name == "aggregate":
        stages = spec.get("pipeline") or [{}]
        query = stages[0].get("$match")
    span = _span(integration, client, conn, name, dbname, collection, query)
    if span is not None and name == "insert" and isinstance(spec.get("documents"), list):
        span.set_metric("mongodb.documents", len(spec["documents"]))
    return span


def _span(integration: Integration, client: Any, conn: Any, name: str, dbname: str,
          collection: Any, query: Optional[Mapping]) -> Any:
    shape = _shape_json(query) if query else None
    resource = " ".join(str(part) for part in (name, collection, shape) if part is not None)
    host, port = getattr(conn, "address", (None, None))
    return integration.start_span(
        client if client is not None else conn, "pymongo.cmd", resource=resource,
        span_type="mongodb",
        tags={"mongodb.db": dbname,
              "mongodb.collection": collection if isinstance(collection, str) else None,
              "mongodb.query": shape, "db.system": "mongodb",
              "out.host": host, "server.address": host},
        metrics={"network.destination.port": port},
    )


def _record_rows(span: Any, response: Any, args: tuple, kwargs: dict) -> None:
    docs = list(getattr(response, "docs", None) or [])
    cursor = docs[0].get("cursor") if len(docs) == 1 and isinstance(docs[0], Mapping) else None
    if isinstance(cursor, Mapping):
        docs = cursor.get("firstBatch", cursor.get("nextBatch")) or []
    span.set_metric("db.row_count", len(docs))


def _record_write_errors(span: Any, reply: Any, args: tuple, kwargs: dict) -> None:
    """A write the server refused comes back as a normal reply; pymongo raises from it later."""
    write_errors = reply.get("writeErrors") if isinstance(reply, Mapping) else None
    if write_errors:
        first = write_errors[0]
        # pymongo's own choice of exception for a refused write.
        kind = "DuplicateKeyError" if first.get("code") == 11000 else "WriteError"
        span.error = 1
        span.set_tag("error.type", f"pymongo.errors.{kind}")
        span.set_tag("error.message", str(first.get("errmsg", "")))


def normalize_filter(value: Any) -> Any:
    """The filter's shape: keys and operators kept, every value (and value list) becomes "?"."""
    if isinstance(value, Mapping):
        return {str(key): "?" if key in _LIST_OPERATORS else normalize_filter(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        # A list of sub-filters ($or, $and) keeps its structure; a list of values does not.
        if value and all(isinstance(item, Mapping) for item in value):
            return [normalize_filter(item) for item in value]
    return "?"


def _shape_json(query: Mapping) -> str:
    text = json.dumps(normalize_filter(query))
    return text if len(text) <= MAX_QUERY_LENGTH else text[:MAX_QUERY_LENGTH] + "..."


def _driver_probes(package: str, connection: str, cursor: str, bulk: str) -> list[FunctionProbe]:
    """The probes of one driver: ``package`` is ``pymongo.synchronous`` or its asyncio twin,
    whose classes carry other names and whose methods are coroutines."""
    return [
        FunctionProbe(f"{package}.pool", f"{connection}.command",
                      on_call=_command_span, on_return=_record_write_errors),
        # find/getMore: _run_with_conn from 4.18, Server.run_operation before.
        FunctionProbe(f"{package}.cursor_base", f"{cursor}._run_with_conn",
                      on_call=_cursor_batch_span, on_return=_record_rows, optional=True),
        FunctionProbe(f"{package}.server", "Server.run_operation",
                      on_call=_operation_span, on_return=_record_rows, optional=True),
        FunctionProbe(f"{package}.bulk", f"{bulk}.write_command",
                      on_call=_bulk_span, on_return=_record_write_errors),
    ]


integration = Integration(
    "pymongo",
    service="pymongo",
    probes=[
        *_driver_probes("pymongo.synchronous", "Connection", "_CursorBase", "_Bulk"),
        *_driver_probes("pymongo.asynchronous", "AsyncConnection", "_AsyncCursorBase",
                        "_AsyncBulk"),
    ],
)
