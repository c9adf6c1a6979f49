"""cassandra-driver 3.x against the project's CQL stand-in (tests/standins/cassandra.py):
spans at the test agent, execute_async, prepared and batch statements, paging, errors,
runtime toggling."""

from __future__ import annotations

import pytest

cassandra = pytest.importorskip("cassandra")

from cassandra import ConsistencyLevel, InvalidRequest  # noqa: E402
from cassandra.cluster import (  # noqa: E402
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    ResponseFuture,
)
from cassandra.policies import DCAwareRoundRobinPolicy  # noqa: E402
from cassandra.query import BatchStatement, SimpleStatement  # noqa: E402

from ddagent import probes  # noqa: E402
from ddagent.pin import Pin  # noqa: E402
from tests.integrations.conftest import enabled, spans_named  # noqa: E402
from tests.standins.cassandra import INT, INVALID, VARCHAR, running_cassandra  # noqa: E402

PROBED = ["__init__", "_set_final_result", "_set_final_exception"]
ORIGINALS = {name: vars(ResponseFuture)[name] for name in PROBED}
USERS = [["ada", 36], ["bob", 25], ["cy", 52]]


@pytest.fixture(scope="module")
def standin():
    with running_cassandra() as server:
        server.add_rows(r"from (ks\.)?users", [("name", VARCHAR), ("age", INT)], USERS)
        server.add_error(r"from nosuch", INVALID, "unconfigured table nosuch")
        yield server


@pytest.fixture(scope="module")
def session(standin):
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="dc1"))
    cluster = Cluster(["127.0.0.1"], port=standin.port, protocol_version=4,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect("ks")
    yield session
    cluster.shutdown()


@pytest.fixture
def cassandra_probes():
    yield from enabled("cassandra")


def _check_common(span: dict, port: int) -> None:
    assert span["service"] == "cassandra"
    assert span["type"] == "cassandra"
    assert span["error"] == 0
    assert span["meta"]["component"] == "cassandra"
    assert span["meta"]["span.kind"] == "client"
    assert span["meta"]["db.system"] == "cassandra"
    assert span["meta"]["cassandra.keyspace"] == "ks"
    assert span["meta"]["cassandra.cluster"] == "ddagent-test"
    assert span["meta"]["out.host"] == "127.0.0.1"
    assert span["meta"]["server.address"] == "127.0.0.1"
    assert span["metrics"]["network.destination.port"] == port
    assert span["metrics"]["_dd.measured"] == 1


def test_execute_prepared_batch_and_paging(cassandra_probes, session, standin, agent_tracer,
                                           test_agent):
    with agent_tracer.trace("app.work", service="app") as root:
        session.execute("INSERT INTO users (name, age) VALUES ('dee', 41)")
        rows = session.execute(SimpleStatement("SELECT * FROM users", fetch_size=2,
                                               consistency_level=ConsistencyLevel.ONE))
        assert rows.has_more_pages
        assert [r.name for r in rows] == ["ada", "bob", "cy"]  # fetches the second page
        prepared = session.prepare("SELECT * FROM users WHERE name = ?")
        assert session.execute(prepared, ["ada"]).one().age == 36
        batch = BatchStatement(consistency_level=ConsistencyLevel.QUORUM)
        batch.add("INSERT INTO users (name) VALUES ('e')")
        batch.add(prepared, ["f"])
        batch.add("INSERT INTO users (name) VALUES ('g')")
        batch.add("INSERT INTO users (name) VALUES ('h')")
        session.execute(batch)
        session.execute(query="SELECT * FROM users")  # execute(query=...) crashed in the seed
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "cassandra.query")
    assert [s["resource"] for s in spans] == [
        "INSERT INTO users (name, age) VALUES ('dee', 41)",
        "SELECT * FROM users",
        "SELECT * FROM users WHERE name = ?",
        "BatchStatement",
        "SELECT * FROM users",
    ]
    for span in spans:
        _check_common(span, standin.port)
        assert span["parent_id"] == root.span_id
    insert, paged, bound, batch_span, plain = spans
    assert insert["metrics"]["db.row_count"] == 0
    assert paged["metrics"]["db.row_count"] == 2  # the first page
    assert paged["meta"]["cassandra.paginated"] == "True"
    assert paged["meta"]["cassandra.consistency_level"] == "ONE"
    assert bound["metrics"]["db.row_count"] == 3
    assert bound["meta"]["cassandra.paginated"] == "False"
    assert "cassandra.consistency_level" not in bound["meta"]
    assert batch_span["meta"]["cassandra.query"] == (
        "INSERT INTO users (name) VALUES ('e'); INSERT INTO users (name) VALUES ('g')")
    assert batch_span["metrics"]["cassandra.batch_size"] == 4
    assert batch_span["meta"]["cassandra.consistency_level"] == "QUORUM"
    assert plain["metrics"]["db.row_count"] == 3
    # What the stand-in received is what the spans describe.
    assert ("BATCH", ConsistencyLevel.QUORUM) in [(op, c) for op, _, c in standin.statements]
    test_agent.assert_no_check_failures()


def test_execute_async_span_ends_when_the_result_arrives(cassandra_probes, session, standin,
                                                         list_writer):
    from ddagent.tracer import tracer

    release = standin.hold(r"where age > 40")
    with tracer.trace("app.work") as root:
        future = session.execute_async("SELECT * FROM users WHERE age > 40")
        assert tracer.current_span() is root  # the query span is not left active
        [span] = [s for s in vars(future).values() if getattr(s, "name", "") == "cassandra.query"]
        assert not span.finished
        release.set()
        assert len(future.result().all()) == 3
        assert span.finished
    assert span.parent_id == root.span_id
    assert span.metrics["db.row_count"] == 3


def test_a_server_error_marks_the_span_and_the_app_gets_the_drivers_exception(
        cassandra_probes, session, agent_tracer, test_agent):
    with pytest.raises(InvalidRequest) as info:
        session.execute("SELECT * FROM nosuch")
    assert "unconfigured table nosuch" in str(info.value)
    future = session.execute_async("SELECT * FROM nosuch WHERE a = 1")
    with pytest.raises(InvalidRequest):
        future.result()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(2), "cassandra.query")
    assert sorted(s["resource"] for s in spans) == [
        "SELECT * FROM nosuch", "SELECT * FROM nosuch WHERE a = 1"]
    for span in spans:
        assert span["error"] == 1
        assert span["meta"]["error.type"] == "cassandra.InvalidRequest"
        assert "unconfigured table nosuch" in span["meta"]["error.message"]


def test_service_from_pin_and_from_env(cassandra_probes, session, list_writer, monkeypatch):
    monkeypatch.setenv("DD_CASSANDRA_SERVICE", "cql-from-env")
    session.execute("SELECT * FROM users")
    Pin.override(session, service="cql-from-pin")
    try:
        session.execute("SELECT * FROM users")
    finally:
        Pin.override(session, service=None)
    assert [s.service for s in list_writer.spans] == ["cql-from-env", "cql-from-pin"]


def test_disable_restores_the_driver_and_enable_traces_again(session, list_writer):
    probes.enable("cassandra")
    session.execute("SELECT * FROM users")
    assert len(list_writer.spans) == 1
    probes.disable("cassandra")
    assert all(vars(ResponseFuture)[name] is ORIGINALS[name] for name in PROBED)
    session.execute("SELECT * FROM users")
    session.execute_async("SELECT * FROM users").result()
    assert len(list_writer.spans) == 1
    probes.enable("cassandra")
    try:
        session.execute("SELECT * FROM users")
    finally:
        probes.disable("cassandra")
    assert len(list_writer.spans) == 2
    assert all(vars(ResponseFuture)[name] is ORIGINALS[name] for name in PROBED)
