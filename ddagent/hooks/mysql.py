"""mysql-connector-python: ``mysql.query`` spans through the shared DB-API layer.

``mysql.connector.connect`` is probed; it returns a ``CMySQLConnection`` (C extension) or a
``MySQLConnection`` (pure Python, ``use_pure=True``), and both come back as traced proxies.
Connections built by calling those classes directly, or taken from a reference made before
ddagent started (``from mysql.connector import connect``), are not traced.

Tags: ``db.system=mysql``, ``db.name`` (as given to ``connect``; reading the connection's
``database`` property would cost a query), ``db.user``, ``out.host``; metric
``network.destination.port``.
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks.dbapi import ConnectionInfo, Database
from ddagent.hooks.registry import Integration


def _describe(connection: Any, args: tuple, kwargs: dict) -> ConnectionInfo:
    return ConnectionInfo(host=connection.server_host, port=connection.server_port,
                          database=kwargs.get("database") or kwargs.get("db"),
                          user=connection.user)


MYSQL = Database(span_name="mysql.query", system="mysql", describe=_describe)

integration = Integration(
    "mysql",
    service="mysql",
    probes=[MYSQL.connect_probe("mysql.connector")],
)
