"""PyMySQL: ``pymysql.query`` spans (service ``pymysql``) through the shared DB-API layer.

``pymysql.connect`` (and its alias ``pymysql.Connect``) is probed; the ``Connection`` it builds
comes back as a traced proxy. Unbuffered cursors (``SSCursor``, ``SSDictCursor``) read rows from
the server as they are fetched, so their fetches are traced too.

Tags: ``db.system=mysql``, ``db.name``, ``db.user``, ``out.host``; metric
``network.destination.port``.
"""

from __future__ import annotations

from typing import Any, Optional

from ddagent.hooks.dbapi import ConnectionInfo, Database, instances_of
from ddagent.hooks.registry import Integration


def _describe(connection: Any, args: tuple, kwargs: dict) -> ConnectionInfo:
    return ConnectionInfo(host=connection.host, port=connection.port,
                          database=_text(connection.db), user=_text(connection.user))


def _text(value: Any) -> Optional[str]:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


PYMYSQL = Database(span_name="pymysql.query", system="mysql", describe=_describe,
                   server_side=instances_of("pymysql.cursors", "SSCursor"))

integration = Integration(
    "pymysql",
    service="pymysql",
    probes=[PYMYSQL.connect_probe("pymysql"), PYMYSQL.connect_probe("pymysql", "Connect")],
)
