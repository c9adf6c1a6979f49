"""sqlite3 (C module, wrapt proxies): spans at the test agent, errors, runtime toggling."""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2

import pytest

from ddagent import probes
from ddagent.pin import Pin
from tests.integrations._toggling import toggle_while_threads_call
from tests.integrations.conftest import enabled, spans_named

ORIGINAL_CONNECT = sqlite3.connect


@pytest.fixture
def sqlite_probes():
    yield from enabled("sqlite3")


def test_queries_are_children_of_the_user_span(sqlite_probes, agent_tracer, test_agent):
    conn = sqlite3.connect(":memory:")
    with agent_tracer.trace("app.work", service="app") as root:
        conn.execute("create table t (a integer)")
        conn.executemany("insert into t values (?)", [(1,), (2,), (3,)])
        cur = conn.cursor()
        assert cur.execute("select a from t order by a").fetchall() == [(1,), (2,), (3,)]
        cur.executescript("update t set a = a + 1; delete from t where a = 4;")
    conn.close()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "sqlite.query")
    assert [s["resource"] for s in spans] == [
        "create table t (a integer)",
        "insert into t values (?)",
        "select a from t order by a",
        "update t set a = a + ?; delete from t where a = ?;",
    ]
    for span in spans:
        assert span["service"] == "sqlite"
        assert span["type"] == "sql"
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
        assert span["meta"]["component"] == "sqlite"
        assert span["meta"]["db.system"] == "sqlite"
        assert span["meta"]["span.kind"] == "client"
        assert "out.host" not in span["meta"]
    assert [s["metrics"]["db.row_count"] for s in spans] == [-1, 3, -1, -1]
    test_agent.assert_no_check_failures()


def test_connections_behave_like_sqlite_connections(sqlite_probes, list_writer, tmp_path):
    conn = sqlite3.dbapi2.connect(str(tmp_path / "db.sqlite"))
    assert isinstance(conn, sqlite3.Connection)
    with conn as same:
        assert same is conn
        same.execute("create table t (a)")
    cur = conn.execute("insert into t values (1)")
    assert isinstance(cur, sqlite3.Cursor)
    assert cur.execute("select count(*) from t") is cur
    assert cur.fetchone() == (1,)
    assert list(conn.execute("select a from t")) == [(1,)]
    conn.close()
    assert [s.name for s in list_writer.spans] == ["sqlite.query"] * 4


def test_bad_sql_marks_the_span_and_the_app_gets_sqlite_error(sqlite_probes, agent_tracer,
                                                              test_agent):
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        conn.cursor().execute("select * from missing")
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "sqlite.query")
    assert span["error"] == 1
    assert span["meta"]["error.type"] == "sqlite3.OperationalError"
    assert span["meta"]["error.message"] == "no such table: missing"


def test_pin_on_the_connection_sets_the_service(sqlite_probes, list_writer, monkeypatch):
    monkeypatch.setenv("DD_SQLITE_SERVICE", "sqlite-from-env")
    conn = sqlite3.connect(":memory:")
    conn.execute("select 1")
    Pin.override(conn, service="sqlite-from-pin")
    conn.execute("select 2")
    conn.cursor().execute("select 3")
    assert [s.service for s in list_writer.spans] == [
        "sqlite-from-env", "sqlite-from-pin", "sqlite-from-pin"]


def test_disable_while_threads_query(list_writer):
    """Eight threads keep querying (on connections opened while traced) through a disable."""
    probes.enable("sqlite3")
    assert sqlite3.connect is not ORIGINAL_CONNECT
    connections = [sqlite3.connect(":memory:", check_same_thread=False) for _ in range(8)]

    def select(i: int) -> None:
        assert connections[i].execute("select ?", (i,)).fetchone() == (i,)

    def original_connect_is_back() -> None:
        assert sqlite3.connect is ORIGINAL_CONNECT and sqlite3.dbapi2.connect is ORIGINAL_CONNECT

    toggle_while_threads_call("sqlite3", select, list_writer.count, threads=8,
                              check_disabled=original_connect_is_back)
    original_connect_is_back()


def test_tag_connection_adds_tags_to_later_spans_only_where_unset(sqlite_probes, list_writer):
    from ddagent.hooks import dbapi

    conn = sqlite3.connect(":memory:")
    cursor = conn.cursor()
    cursor.execute("select 1")
    # "db.name" is known (as None) for sqlite connections: it stays unset.
    assert dbapi.tag_connection(cursor, {"django.db.alias": "default", "db.name": "x"})
    cursor.execute("select 2")
    conn.cursor().execute("select 3")
    first, second, third = list_writer.spans
    assert "django.db.alias" not in first.meta
    for span in (second, third):
        assert span.meta["django.db.alias"] == "default"
        assert "db.name" not in span.meta
    assert not dbapi.tag_connection(object(), {"a": "b"})
