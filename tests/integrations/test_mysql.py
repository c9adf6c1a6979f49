"""mysql-connector (C extension and pure Python), PyMySQL and mysqlclient against the real
MariaDB: spans at the test agent, errors, server-side cursors, runtime toggling."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pytest

from ddagent import probes
from tests.integrations._sqldb import (
    MYSQL_HOST,
    MYSQL_PORT,
    PASSWORD,
    assert_no_secret,
    assert_query_span,
    require_server,
)
from tests.integrations._toggling import toggle_while_threads_call
from tests.integrations.conftest import spans_named


@dataclass
class Driver:
    """How one driver is reached, and the spans its integration makes."""

    integration: str
    module: str
    span_name: str
    service: str
    component: str
    connect_kwargs: dict = field(default_factory=dict)

    def connect(self, password: str = ""):  # MariaDB's root here has an empty password
        module = pytest.importorskip(self.module)
        conn = module.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root",
                              password=password, database="test",
                              **self.connect_kwargs)
        if callable(conn.autocommit):  # PyMySQL and MySQLdb: a method; mysql-connector: a property
            conn.autocommit(True)
        else:
            conn.autocommit = True
        return conn

    def errors(self):
        return importlib.import_module(self.module)


DRIVERS = {
    "mysql-connector-c": Driver("mysql", "mysql.connector", "mysql.query", "mysql", "mysql",
                                {"use_pure": False}),
    "mysql-connector-pure": Driver("mysql", "mysql.connector", "mysql.query", "mysql", "mysql",
                                   {"use_pure": True}),
    "pymysql": Driver("pymysql", "pymysql", "pymysql.query", "pymysql", "pymysql"),
    "mysqldb": Driver("mysqldb", "MySQLdb", "mysql.query", "mysql", "mysqldb"),
}


@pytest.fixture(autouse=True)
def mysql_server():
    require_server(MYSQL_HOST, MYSQL_PORT)


@pytest.fixture(params=list(DRIVERS))
def driver(request):
    driver = DRIVERS[request.param]
    if request.param == "mysql-connector-c":
        connector = pytest.importorskip("mysql.connector")
        if not connector.HAVE_CEXT:
            pytest.skip("mysql-connector's C extension does not load here")
    probes.enable(driver.integration)
    yield driver
    probes.disable(driver.integration)


def test_queries_reach_the_agent_normalised(driver, agent_tracer,
                                            test_agent):
    table = "ddagent_my_" + driver.integration
    conn = driver.connect()
    with agent_tracer.trace("app.work", service="app") as root:
        cur = conn.cursor()
        cur.execute(f"drop table if exists {table}")
        cur.execute(f"create table {table} (id int, name varchar(20))")
        cur.executemany(f"insert into {table} values (%s, %s)", [(1, "ann"), (2, "bob")])
        cur.execute(f"select name from {table} where id = 1 and name in ('ann', 'x')")
        assert [tuple(r) for r in cur.fetchall()] == [("ann",)]
        cur.execute(f"update {table} set name = 'carl' where id = %s", (2,))
        cur.close()
    conn.close()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), driver.span_name)
    assert [s["resource"] for s in spans] == [
        f"drop table if exists {table}",
        f"create table {table} (id int, name varchar(?))",
        f"insert into {table} values (%s, %s)",
        f"select name from {table} where id = ? and name in (?)",
        f"update {table} set name = ? where id = %s",
    ]
    for span in spans:
        assert_query_span(span, name=driver.span_name, service=driver.service,
                          component=driver.component, system="mysql", host=MYSQL_HOST,
                          port=MYSQL_PORT, database="test", user="root")
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
    assert spans[2]["metrics"]["db.row_count"] == 2
    assert spans[4]["metrics"]["db.row_count"] == 1
    test_agent.assert_no_check_failures()


def test_bad_query_marks_the_span_and_the_app_gets_the_driver_error(driver,
                                                                      agent_tracer, test_agent):
    conn = driver.connect()
    cur = conn.cursor()
    with pytest.raises(driver.errors().ProgrammingError) as raised:
        cur.execute("select * from ddagent_missing_table where secret = 'x'")
    conn.close()
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), driver.span_name)
    assert span["error"] == 1
    assert span["resource"] == "select * from ddagent_missing_table where secret = ?"
    error_type = type(raised.value)
    assert span["meta"]["error.type"] == f"{error_type.__module__}.{error_type.__qualname__}"
    assert "ddagent_missing_table" in span["meta"]["error.message"]
    assert_no_secret(span)


def test_context_managers_and_callproc(driver, list_writer):
    conn = driver.connect()
    cur = conn.cursor()
    cur.execute("drop procedure if exists ddagent_double")
    cur.execute("create procedure ddagent_double(in x int) select x * 2")
    cur.close()
    with conn.cursor() as cur:
        cur.callproc("ddagent_double", (21,))
        if driver.module == "mysql.connector":
            [result] = list(cur.stored_results())
            assert result.fetchall() == [(42,)]
        else:
            assert tuple(cur.fetchone()) == (42,)
    conn.close()
    names = [(s.name, s.resource) for s in list_writer.spans]
    assert names[-1] == (driver.span_name, "ddagent_double")


def test_password_never_tagged(driver, list_writer):
    """mysql's root here has no password: connect as a user made with one."""
    admin = driver.connect()
    cur = admin.cursor()
    cur.execute("create user if not exists 'ddagent_pw'@'127.0.0.1' identified by "
                f"'{PASSWORD}'")
    cur.execute("grant all on test.* to 'ddagent_pw'@'127.0.0.1'")
    cur.close()
    admin.close()
    module = pytest.importorskip(driver.module)
    conn = module.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="ddagent_pw",
                          password=PASSWORD, database="test", **driver.connect_kwargs)
    conn.cursor().execute("select 1")
    conn.close()
    span = list_writer.spans[-1]
    assert span.meta["db.user"] == "ddagent_pw"
    for span in list_writer.spans:  # the CREATE USER statement too
        assert PASSWORD not in span.resource
        assert all(PASSWORD not in value for value in span.meta.values())


def test_server_side_cursor_traces_its_fetches(driver, list_writer):
    if driver.module == "mysql.connector":
        pytest.skip("mysql-connector has no server-side cursor class")
    module = pytest.importorskip(driver.module)
    cursors = importlib.import_module(f"{driver.module}.cursors")
    conn = driver.connect()
    cur = conn.cursor(cursors.SSCursor)
    cur.execute("select 1 union all select 2 union all select 3")
    assert cur.fetchone() == (1,)
    assert list(cur.fetchall()) == [(2,), (3,)]
    cur.close()
    conn.close()
    assert module is not None
    assert [(s.name, s.metrics.get("db.row_count")) for s in list_writer.spans][1:] == [
        (f"{driver.span_name}.fetchone", 1), (f"{driver.span_name}.fetchall", 2)]


def test_disable_while_threads_query(driver, list_writer):
    probes.disable(driver.integration)
    connections: dict = {}

    def query_once(i: int) -> None:
        if i not in connections:
            connections[i] = driver.connect()
        cur = connections[i].cursor()
        cur.execute("select %s", (i,))
        assert tuple(cur.fetchone()) == (i,)
        cur.close()

    try:
        toggle_while_threads_call(driver.integration, query_once, list_writer.count)
    finally:
        for conn in connections.values():
            conn.close()
