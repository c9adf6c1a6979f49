"""psycopg2 and psycopg 3 (sync and asyncio): ``postgres.query`` spans through ``hooks/dbapi.py``.

Probed: ``psycopg2.connect``; psycopg 3's ``psycopg.connect`` and the ``Connection.connect`` and
``AsyncConnection.connect`` classmethods (so subclasses are traced too). A connection taken
from a reference made before ddagent started (``from psycopg2 import connect``) is not traced.

psycopg2's C functions that accept only a real connection or cursor (``register_type``, under
each name the package imports it as, ``quote_ident`` and ``encrypt_password``) are given the
driver's own object when called with a traced one, so ``register_uuid``, ``register_json``,
``sql.Identifier(...).as_string(conn)`` and the like keep working. psycopg 3 is pure Python
above its C core and accepts the proxies as they are.

Server-side cursors (``conn.cursor(name=...)``) also trace their fetches.
Tags: ``db.system=postgresql``, ``db.name``, ``db.user``, ``out.host``; metric
``network.destination.port``; read from ``connection.info`` (never the DSN, which may hold a
password).
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks.dbapi import ConnectionInfo, Database
from ddagent.hooks.registry import Integration


def _describe(connection: Any, args: tuple, kwargs: dict) -> ConnectionInfo:
    info = connection.info  # psycopg2 >= 2.8 and psycopg 3 alike
    return ConnectionInfo(host=info.host, port=int(info.port) if info.port else None,
                          database=info.dbname, user=info.user)


def _server_side(cursor: Any) -> bool:
    # psycopg2 named cursors have a name; psycopg 3's ServerCursor is the only one with one.
    return getattr(cursor, "name", None) is not None


POSTGRES = Database(span_name="postgres.query", system="postgresql", describe=_describe,
                    server_side=_server_side)

integration = Integration(
    "psycopg",
    service="postgres",
    component="psycopg",
    probes=[
        POSTGRES.connect_probe("psycopg2"),
        *(POSTGRES.real_objects_probe(module, "register_type")
          for module in ("psycopg2.extensions", "psycopg2._psycopg", "psycopg2._json",
                         "psycopg2._range", "psycopg2._ipaddress")),
        POSTGRES.real_objects_probe("psycopg2.extensions", "quote_ident"),
        POSTGRES.real_objects_probe("psycopg2.extras", "quote_ident"),
        POSTGRES.real_objects_probe("psycopg2.extensions", "encrypt_password"),
        POSTGRES.connect_probe("psycopg"),
        POSTGRES.connect_probe("psycopg", "Connection.connect"),
        POSTGRES.connect_probe("psycopg", "AsyncConnection.connect", asynchronous=True),
    ],
)
