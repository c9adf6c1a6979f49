"""psycopg2 and psycopg 3 against the real PostgreSQL: spans at the test agent, errors,
APIs that need the real connection, server-side cursors, asyncio, runtime toggling."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ddagent import probes
from ddagent.pin import Pin
from tests.integrations._sqldb import (
    PASSWORD,
    PG_HOST,
    PG_PORT,
    assert_no_secret,
    assert_query_span,
    require_server,
)
from tests.integrations._toggling import toggle_while_threads_call
from tests.integrations.conftest import enabled, spans_named

DRIVERS = ["psycopg2", "psycopg"]


@pytest.fixture(autouse=True)
def postgres_server():
    require_server(PG_HOST, PG_PORT)


@pytest.fixture
def psycopg_probes():
    yield from enabled("psycopg")


@pytest.fixture(params=DRIVERS)
def driver(request):
    return pytest.importorskip(request.param)


def connect(driver, **extra):
    kwargs = dict(host=PG_HOST, port=PG_PORT, user="postgres", password=PASSWORD, dbname="test")
    conn = driver.connect(**kwargs, **extra)
    conn.autocommit = True
    return conn


def check_postgres_span(span: dict) -> None:
    assert_query_span(span, name="postgres.query", service="postgres", component="psycopg",
                      system="postgresql", host=PG_HOST, port=PG_PORT, database="test",
                      user="postgres")


def test_queries_reach_the_agent_normalised(psycopg_probes, driver, agent_tracer, test_agent):
    table = f"ddagent_pg_{driver.__name__}"
    conn = connect(driver)
    with agent_tracer.trace("app.work", service="app") as root:
        with conn.cursor() as cur:
            cur.execute(f"drop table if exists {table}")
            cur.execute(f"create table {table} (id int, name text)")
            cur.executemany(f"insert into {table} values (%s, %s)", [(1, "ann"), (2, "bob")])
            cur.execute(f"select name from {table} where id = 1 and name in ('ann', 'x')")
            assert cur.fetchall() == [("ann",)]
            cur.execute(f"update {table} set name = 'carl' where id = %s", (2,))
    conn.close()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "postgres.query")
    assert [s["resource"] for s in spans] == [
        f"drop table if exists {table}",
        f"create table {table} (id int, name text)",
        f"insert into {table} values (%s, %s)",
        f"select name from {table} where id = ? and name in (?)",
        f"update {table} set name = ? where id = %s",
    ]
    for span in spans:
        check_postgres_span(span)
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
    assert spans[3]["metrics"]["db.row_count"] == 1
    assert spans[4]["metrics"]["db.row_count"] == 1
    test_agent.assert_no_check_failures()


def test_bad_query_marks_the_span_and_the_app_gets_the_driver_error(psycopg_probes, driver,
                                                                      agent_tracer, test_agent):
    conn = connect(driver)
    cur = conn.cursor()
    with pytest.raises(driver.errors.UndefinedTable) as raised:
        cur.execute("select * from ddagent_missing_table where secret = 'x'")
    assert type(raised.value).__module__.startswith(driver.__name__)
    conn.close()
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "postgres.query")
    assert span["error"] == 1
    assert span["resource"] == "select * from ddagent_missing_table where secret = ?"
    error_type = type(raised.value)
    assert span["meta"]["error.type"] == f"{error_type.__module__}.{error_type.__qualname__}"
    assert "ddagent_missing_table" in span["meta"]["error.message"]
    assert_no_secret(span)


def test_connection_shortcut_and_context_managers(psycopg_probes, list_writer):
    psycopg = pytest.importorskip("psycopg")
    with connect(psycopg) as conn:
        assert isinstance(conn, psycopg.Connection)
        cur = conn.execute("select %s::int", (7,))
        assert cur.fetchone() == (7,)
        with conn.cursor() as cur2:
            assert cur2.execute("select 1") is cur2
        with conn.transaction():
            conn.execute("select 2")
    assert [s.name for s in list_writer.spans] == ["postgres.query"] * 3
    assert list_writer.spans[0].metrics["db.row_count"] == 1


def test_psycopg2_apis_that_demand_the_real_connection(psycopg_probes, list_writer):
    pytest.importorskip("psycopg2")
    import psycopg2.extensions
    import psycopg2.extras
    from psycopg2 import sql

    conn = connect(psycopg2)
    assert isinstance(conn, psycopg2.extensions.connection)
    cur = conn.cursor()
    psycopg2.extensions.register_type(psycopg2.extensions.UNICODE, conn)
    psycopg2.extensions.register_type(psycopg2.extensions.UNICODE, cur)
    psycopg2.extras.register_uuid(conn_or_curs=conn)
    psycopg2.extras.register_default_jsonb(conn)
    assert psycopg2.extensions.quote_ident("a b", conn) == '"a b"'
    query = sql.SQL("select {} from (select 1 as {}) t").format(sql.Identifier("x y"),
                                                                 sql.Identifier("x y"))
    assert query.as_string(conn) == 'select "x y" from (select 1 as "x y") t'
    cur.execute(query)
    assert cur.fetchone() == (1,)
    value = uuid.uuid4()
    cur.execute("select %s::uuid, '{\"a\": 1}'::jsonb", (value,))
    assert cur.fetchone() == (value, {"a": 1})
    psycopg2.extras.execute_values(cur, "select * from (values %s) v(a, b)", [(1, "x"), (2, "y")])
    dict_cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    dict_cur.execute("select 5 as five")
    assert dict_cur.fetchone() == {"five": 5}
    conn.close()
    resources = [s.resource for s in list_writer.spans]
    assert resources == [
        'select "x y" from (select ? as "x y") t',
        "select %s::uuid, ?::jsonb",
        "select * from (values (?,?)) v(a, b)",
        "select ? as five",
    ]


def test_psycopg3_composed_queries(psycopg_probes, list_writer):
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    with connect(psycopg) as conn:
        query = sql.SQL("select {} as {}").format(sql.Literal(42), sql.Identifier("the answer"))
        assert conn.execute(query).fetchone() == (42,)
        info = psycopg.types.TypeInfo.fetch(conn, "uuid")
        assert info.oid == 2950
    assert list_writer.spans[0].resource == 'select ? as "the answer"'


def test_server_side_cursor_traces_its_fetches(psycopg_probes, driver, list_writer):
    conn = connect(driver)
    conn.autocommit = False
    cur = conn.cursor(name="ddagent_named")
    cur.execute("select generate_series(1, 10) where 1 = %s", (1,))
    assert cur.fetchone() == (1,)
    assert cur.fetchmany(3) == [(2,), (3,), (4,)]
    assert len(cur.fetchall()) == 6
    cur.close()
    conn.rollback()
    conn.close()
    spans = [(s.name, s.resource, s.metrics.get("db.row_count")) for s in list_writer.spans]
    query = "select generate_series(?, ?) where ? = %s"
    assert spans[0][:2] == ("postgres.query", query)
    assert spans[1:] == [
        ("postgres.query.fetchone", query, 1),
        ("postgres.query.fetchmany", query, 3),
        ("postgres.query.fetchall", query, 6),
    ]


def test_async_psycopg(psycopg_probes, agent_tracer, test_agent):
    psycopg = pytest.importorskip("psycopg")

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(
            host=PG_HOST, port=PG_PORT, user="postgres", password=PASSWORD, dbname="test",
            autocommit=True)
        async with conn:
            with agent_tracer.trace("app.async"):
                async with conn.cursor() as cur:
                    await cur.execute("select %s::int + 1", (41,))
                    assert await cur.fetchone() == (42,)
                cur = await conn.execute("select 'secret'")
                assert await cur.fetchone() == ("secret",)
                with pytest.raises(psycopg.errors.UndefinedTable):
                    await conn.execute("select * from ddagent_missing_table")

    asyncio.run(main())
    agent_tracer.flush(10)
    spans = spans_named(test_agent.wait_for_traces(1), "postgres.query")
    assert [(s["resource"], s["error"]) for s in spans] == [
        ("select %s::int + ?", 0), ("select ?", 0), ("select * from ddagent_missing_table", 1)]
    for span in spans:
        check_postgres_span(span)


def test_pin_and_env_service(psycopg_probes, driver, list_writer, monkeypatch):
    monkeypatch.setenv("DD_PSYCOPG_SERVICE", "pg-from-env")
    conn = connect(driver)
    conn.cursor().execute("select 1")
    Pin.override(conn, service="pg-from-pin")
    conn.cursor().execute("select 2")
    conn.close()
    assert [s.service for s in list_writer.spans] == ["pg-from-env", "pg-from-pin"]


def test_normalisation_can_be_turned_off(psycopg_probes, driver, list_writer, monkeypatch):
    from ddagent.tracer import tracer

    monkeypatch.setattr(tracer.config, "sql_normalize", False)
    conn = connect(driver)
    conn.cursor().execute("select 'kept', 42")
    conn.close()
    assert list_writer.spans[0].resource == "select 'kept', 42"


def test_disable_while_threads_query(driver, list_writer):
    connections: dict[int, object] = {}

    def query_once(i: int) -> None:
        if i not in connections:
            connections[i] = connect(driver)
        cur = connections[i].cursor()
        cur.execute("select %s", (i,))
        assert cur.fetchone() == (i,)

    try:
        toggle_while_threads_call("psycopg", query_once, list_writer.count)
    finally:
        for conn in connections.values():
            conn.close()


def test_patch_accepts_the_seed_name(list_writer):
    from ddagent import patch

    patch(psycopg=True)
    try:
        assert "psycopg" in [row["name"] for row in probes.status() if row["enabled"]]
    finally:
        probes.disable("psycopg")
