"""Shared helpers for the SQL driver tests: server addresses, span checks, toggling under load.

The servers are the machine's real PostgreSQL and MariaDB (tests/../shared notes: trust auth on
PostgreSQL, root with an empty password on MariaDB, database ``test`` on both). Override with
``DDAGENT_TEST_PG_HOST``/``_PORT`` and ``DDAGENT_TEST_MYSQL_HOST``/``_PORT``; a server that
does not answer skips its tests.
"""

from __future__ import annotations

import os
import socket

import pytest

PG_HOST = os.environ.get("DDAGENT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DDAGENT_TEST_PG_PORT", "5432"))
MYSQL_HOST = os.environ.get("DDAGENT_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("DDAGENT_TEST_MYSQL_PORT", "3306"))

# Given to every connect(); no tag may ever contain it.
PASSWORD = "s3cret-pw"


def require_server(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"no database server at {host}:{port} ({exc})")


def assert_no_secret(span: dict) -> None:
    for value in [*span["meta"].values(), span["resource"]]:
        assert PASSWORD not in value


def assert_query_span(span: dict, *, name: str, service: str, component: str, system: str,
                      host: str, port: int, database: str | None, user: str | None) -> None:
    assert span["name"] == name
    assert span["service"] == service
    assert span["type"] == "sql"
    meta, metrics = span["meta"], span["metrics"]
    assert meta["component"] == component
    assert meta["span.kind"] == "client"
    assert meta["db.system"] == system
    assert meta["out.host"] == host
    assert metrics["network.destination.port"] == port
    if database is not None:
        assert meta["db.name"] == database
    if user is not None:
        assert meta["db.user"] == user
    if not span["error"]:
        assert "db.row_count" in metrics
    assert_no_secret(span)
