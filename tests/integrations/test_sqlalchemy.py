"""SQLAlchemy engines on PostgreSQL, MariaDB and sqlite: one ``<vendor>.query`` span per
statement (also when the driver's integration is on), errors, runtime toggling."""

from __future__ import annotations

import pytest

from ddagent import probes
from tests.integrations._sqldb import (
    MYSQL_HOST,
    MYSQL_PORT,
    PG_HOST,
    PG_PORT,
    assert_query_span,
    require_server,
)
from tests.integrations._toggling import toggle_while_threads_call

sqlalchemy = pytest.importorskip("sqlalchemy")

# (url, driver module, driver integration, span name, db.system, host, port, database, user)
ENGINES = {
    "psycopg2": (f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/test", "psycopg2",
                 "psycopg", "postgres.query", "postgresql", PG_HOST, PG_PORT, "postgres"),
    "psycopg": (f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test", "psycopg",
                "psycopg", "postgres.query", "postgresql", PG_HOST, PG_PORT, "postgres"),
    "pymysql": (f"mysql+pymysql://root@{MYSQL_HOST}:{MYSQL_PORT}/test", "pymysql", "pymysql",
                "mysql.query", "mysql", MYSQL_HOST, MYSQL_PORT, "root"),
    "mysqldb": (f"mysql+mysqldb://root@{MYSQL_HOST}:{MYSQL_PORT}/test", "MySQLdb", "mysqldb",
                "mysql.query", "mysql", MYSQL_HOST, MYSQL_PORT, "root"),
    "mysqlconnector": (f"mysql+mysqlconnector://root@{MYSQL_HOST}:{MYSQL_PORT}/test",
                       "mysql.connector", "mysql", "mysql.query", "mysql", MYSQL_HOST,
                       MYSQL_PORT, "root"),
}


@pytest.fixture(params=list(ENGINES))
def engine_spec(request):
    url, module, integration, span_name, system, host, port, user = ENGINES[request.param]
    pytest.importorskip(module)
    require_server(host, port)
    return dict(url=url, integration=integration, span_name=span_name, system=system,
                host=host, port=port, user=user, service=span_name.split(".")[0])


@pytest.fixture
def sqlalchemy_probes():
    probes.enable("sqlalchemy")
    yield
    probes.disable("sqlalchemy")


def run_statements(engine, table: str) -> None:
    text = sqlalchemy.text
    with engine.begin() as conn:
        conn.execute(text(f"drop table if exists {table}"))
        conn.execute(text(f"create table {table} (id int, name varchar(20))"))
        conn.execute(text(f"insert into {table} values (:id, :name)"),
                     [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}])
        rows = conn.execute(text(f"select name from {table} where id = 1 and name = 'ann'"))
        assert rows.fetchall() == [("ann",)]


@pytest.mark.parametrize("driver_too", [False, True], ids=["engine-only", "driver-too"])
def test_one_span_per_statement(engine_spec, driver_too, sqlalchemy_probes, agent_tracer,
                                test_agent):
    if driver_too:
        probes.enable(engine_spec["integration"])
    try:
        engine = sqlalchemy.create_engine(engine_spec["url"])
        engine.connect().close()  # the dialect's first-connect queries, outside the trace
        table = "ddagent_sa_" + engine_spec["integration"]
        with agent_tracer.trace("app.work", service="app") as root:
            run_statements(engine, table)
        engine.dispose()
    finally:
        probes.disable(engine_spec["integration"])
    agent_tracer.flush(10)

    traces = test_agent.wait_for_traces(1)
    [trace] = [t for t in traces if any(s["span_id"] == root.span_id for s in t)]
    query_spans = [s for s in trace if s["name"].endswith(".query")]
    resources = [s["resource"] for s in query_spans]
    assert resources[:2] == [f"drop table if exists {table}",
                             f"create table {table} (id int, name varchar(?))"]
    # the insert's placeholders are the driver's paramstyle (%s or %(id)s)
    assert resources[2].startswith(f"insert into {table} values (%")
    assert resources[3] == f"select name from {table} where id = ? and name = ?"
    assert len(query_spans) == 4
    for span in query_spans:
        assert_query_span(span, name=engine_spec["span_name"], service=engine_spec["service"],
                          component="sqlalchemy", system=engine_spec["system"],
                          host=engine_spec["host"], port=engine_spec["port"],
                          database="test", user=engine_spec["user"])
        assert span["parent_id"] == root.span_id
    assert query_spans[-1]["metrics"]["db.row_count"] in (1, -1)
    test_agent.assert_no_check_failures()


def test_bad_statement_records_the_driver_error(engine_spec, sqlalchemy_probes, agent_tracer,
                                                test_agent):
    probes.enable(engine_spec["integration"])
    try:
        engine = sqlalchemy.create_engine(engine_spec["url"])
        engine.connect().close()
        with agent_tracer.trace("app.work"):
            with engine.connect() as conn:
                with pytest.raises(sqlalchemy.exc.ProgrammingError) as raised:
                    conn.execute(sqlalchemy.text("select * from ddagent_missing where a = 'x'"))
        engine.dispose()
    finally:
        probes.disable(engine_spec["integration"])
    agent_tracer.flush(10)

    spans = [s for t in test_agent.wait_for_traces(1) for s in t
             if s["name"] == engine_spec["span_name"]]
    [span] = [s for s in spans if "ddagent_missing" in s["resource"]]
    assert span["meta"]["component"] == "sqlalchemy"
    assert span["error"] == 1
    assert span["resource"] == "select * from ddagent_missing where a = ?"
    orig = type(raised.value.orig)
    assert span["meta"]["error.type"] == f"{orig.__module__}.{orig.__qualname__}"


def test_sqlite_engine_and_service_override(sqlalchemy_probes, list_writer, monkeypatch):
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("select 1"))
        monkeypatch.setenv("DD_SQLALCHEMY_SERVICE", "sa-from-env")
        conn.execute(sqlalchemy.text("select 2"))
    [first, second] = list_writer.spans
    assert (first.name, first.service, first.resource) == ("sqlite.query", "sqlite", "select ?")
    assert first.meta["db.system"] == "sqlite" and "out.host" not in first.meta
    assert second.service == "sa-from-env"


def test_seed_trace_engine(list_writer):
    from ddagent.hooks.sqlalchemy import trace_engine

    engine = sqlalchemy.create_engine("sqlite://")
    try:
        trace_engine(engine, service="my-db")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    finally:
        probes.disable("sqlalchemy")
    assert [(s.name, s.service) for s in list_writer.spans] == [("sqlite.query", "my-db")]


def test_disable_while_threads_query(engine_spec, list_writer):
    probes.enable(engine_spec["integration"])
    engine = sqlalchemy.create_engine(engine_spec["url"], pool_size=4)
    try:
        def query_once(i: int) -> None:
            with engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("select :i"), {"i": i}).scalar() == i

        def sqlalchemy_spans() -> int:
            return sum(1 for s in list_writer.spans if s.meta.get("component") == "sqlalchemy")

        toggle_while_threads_call("sqlalchemy", query_once, sqlalchemy_spans)
    finally:
        probes.disable(engine_spec["integration"])
        engine.dispose()
