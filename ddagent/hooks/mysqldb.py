"""mysqlclient (``MySQLdb``): ``mysql.query`` spans through the shared DB-API layer.

``MySQLdb.connect`` and its aliases ``MySQLdb.Connect`` and ``MySQLdb.Connection`` are probed;
the connections they build come back as traced proxies. Unbuffered cursors (``SSCursor``,
``SSDictCursor``) read rows from the server as they are fetched, so their fetches are traced
too.

Tags: ``db.system=mysql``, ``db.name``, ``db.user``, ``out.host``; metric
``network.destination.port``.
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks.dbapi import ConnectionInfo, Database, instances_of
from ddagent.hooks.registry import Integration


def _describe(connection: Any, args: tuple, kwargs: dict) -> ConnectionInfo:
    database = kwargs.get("database") or kwargs.get("db")
    return ConnectionInfo(host=getattr(connection, "host", None) or kwargs.get("host"),
                          port=getattr(connection, "port", None) or kwargs.get("port"),
                          database=getattr(connection, "database", None) or database,
                          user=getattr(connection, "user", None) or kwargs.get("user"))


MYSQL = Database(span_name="mysql.query", system="mysql", describe=_describe,
                 server_side=instances_of("MySQLdb.cursors", "CursorUseResultMixIn"))

integration = Integration(
    "mysqldb",
    service="mysql",
    probes=[MYSQL.connect_probe("MySQLdb", name) for name in ("connect", "Connect", "Connection")],
)
