"""redis-py against the real Redis server: spans at the test agent, errors, runtime toggling."""

from __future__ import annotations

import pytest
import redis
import redis.cluster
from redis import Redis

from ddagent import probes
from ddagent.hooks import rewrite
from ddagent.pin import Pin
from ddagent.stats import STATS
from tests.integrations import servers
from tests.integrations._toggling import toggle_while_threads_call
from tests.integrations.conftest import enabled, spans_named

PROBED = [Redis.execute_command, redis.client.Pipeline.execute,
          redis.client.Pipeline.immediate_execute_command]
ORIGINAL_CODE = [f.__code__ for f in PROBED]



@pytest.fixture
def redis_probes():
    yield from enabled("redis")


@pytest.fixture
def client(redis_url):
    c = Redis.from_url(redis_url)
    c.delete("ddagent:k")
    yield c
    c.close()


def test_commands_are_children_of_the_user_span(probe_mechanism, redis_probes, client,
                                                  agent_tracer, test_agent, redis_url):
    with agent_tracer.trace("app.work", service="app") as root:
        assert client.set("ddagent:k", "v" * 150) is True
        assert client.get("ddagent:k") == b"v" * 150
        assert client.get("ddagent:missing") is None
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "redis.command")
    assert [s["resource"] for s in spans] == ["SET", "GET", "GET"]
    set_span, hit, miss = spans
    for span in spans:
        assert span["service"] == "redis"
        assert span["type"] == "redis"
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
        assert span["meta"]["component"] == "redis"
        assert span["meta"]["db.system"] == "redis"
        assert span["meta"]["span.kind"] == "client"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["meta"]["server.address"] == "127.0.0.1"
        assert span["metrics"]["network.destination.port"] == 6379
        assert span["metrics"]["out.redis_db"] == 0
        assert span["metrics"]["_dd.measured"] == 1
    assert set_span["meta"]["redis.raw_command"] == "SET ddagent:k " + "v" * 100 + "..."
    assert set_span["metrics"]["redis.args_length"] == 3
    assert hit["metrics"]["db.row_count"] == 1
    assert miss["metrics"]["db.row_count"] == 0
    test_agent.assert_no_check_failures()


def test_pipeline_is_one_span(probe_mechanism, redis_probes, client, agent_tracer, test_agent):
    with client.pipeline() as pipe:
        assert pipe.set("ddagent:k", 1).incr("ddagent:k").get("ddagent:k").execute() == [
            True, 2, b"2"]
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "redis.command")
    assert span["resource"] == "SET\nINCRBY\nGET"
    assert span["meta"]["redis.raw_command"] == "SET ddagent:k 1\nINCRBY ddagent:k 1\nGET ddagent:k"
    assert span["metrics"]["redis.pipeline_length"] == 3
    assert span["service"] == "redis"


def test_a_bad_command_marks_the_span_and_the_app_gets_redis_error(
        probe_mechanism, redis_probes, client, agent_tracer, test_agent):
    with pytest.raises(redis.exceptions.ResponseError) as info:
        client.execute_command("NOSUCHCOMMAND", "x")
    assert "unknown command" in str(info.value)
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "redis.command")
    assert span["error"] == 1
    assert span["meta"]["error.type"] == "redis.exceptions.ResponseError"
    assert "unknown command" in span["meta"]["error.message"]
    assert "execute_command" in span["meta"]["error.stack"]


def test_service_from_pin_and_from_env(redis_probes, client, agent_tracer, test_agent,
                                       monkeypatch):
    monkeypatch.setenv("DD_REDIS_SERVICE", "cache-from-env")
    client.ping()
    Pin.override(client, service="cache-from-pin")
    client.ping()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(2), "redis.command")
    assert sorted(s["service"] for s in spans) == ["cache-from-env", "cache-from-pin"]


def test_a_method_stored_before_instrumentation_is_traced(client, list_writer):
    probes.disable("redis")
    stored = Redis.execute_command  # taken while uninstrumented, like `from redis import Redis`
    probes.enable("redis")
    try:
        assert stored(client, "PING") is True
    finally:
        probes.disable("redis")
    assert [s.resource for s in list_writer.spans] == ["PING"]


def test_disable_while_threads_call_redis(redis_url, list_writer):
    """Eight threads keep calling Redis while the integration is switched off and on again."""
    clients = [Redis.from_url(redis_url) for _ in range(8)]

    def set_and_get(i: int) -> None:
        clients[i].set(f"ddagent:t{i}", i)
        assert clients[i].get(f"ddagent:t{i}") == str(i).encode()

    def original_code_is_back() -> None:
        assert all(f.__code__ is c for f, c in zip(PROBED, ORIGINAL_CODE))

    try:
        toggle_while_threads_call("redis", set_and_get, list_writer.count, threads=8,
                                  check_disabled=original_code_is_back)
    finally:
        for client in clients:
            client.close()
    original_code_is_back()


def test_disabled_redis_costs_nothing_and_reports_status():
    probes.enable("redis")
    assert all(rewrite.is_instrumented(f) for f in PROBED)
    [row] = [r for r in probes.status() if r["name"] == "redis"]
    assert row["enabled"] and row["instrumented"] and row["installed"]
    assert row["version"] == redis.__version__

    probes.disable("redis")
    assert not any(rewrite.is_instrumented(f) for f in PROBED)
    [row] = [r for r in probes.status() if r["name"] == "redis"]
    assert not row["enabled"] and not row["instrumented"]


def test_a_failing_probe_is_counted_and_disables_redis(redis_probes, client, list_writer):
    class BrokenTracer:
        enabled = True

        def trace(self, *args, **kwargs):
            raise RuntimeError("probe bug")

    before = STATS.get("probes.errors.redis")
    Pin.override(client, tracer=BrokenTracer())
    assert client.set("ddagent:k", "1") is True  # the application call is not affected
    assert client.get("ddagent:k") == b"1"
    assert STATS.get("probes.errors.redis") == before + 1
    assert not rewrite.is_instrumented(Redis.execute_command)
    [row] = [r for r in probes.status() if r["name"] == "redis"]
    assert not row["enabled"] and row["errors"] == before + 1
    assert list_writer.spans == []


def test_transaction_with_watch(redis_probes, client, list_writer):
    """Redis.transaction: WATCH and reads run at once, the MULTI block in execute()."""
    client.set("ddagent:k", 1)

    def increment(pipe):
        value = int(pipe.get("ddagent:k"))
        pipe.multi()
        pipe.set("ddagent:k", value + 1)

    assert client.transaction(increment, "ddagent:k") == [True]
    assert [s.resource for s in list_writer.spans] == ["SET", "WATCH", "GET", "SET"]
    assert list_writer.spans[-1].metrics["redis.pipeline_length"] == 1


@pytest.fixture(scope="module")
def cluster_ports():
    with servers.redis_cluster() as ports:
        yield ports


@pytest.fixture
def cluster(cluster_ports):
    c = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    yield c
    c.close()


def test_cluster_commands_and_pipelines(redis_probes, cluster, agent_tracer, test_agent):
    with agent_tracer.trace("app.work", service="app") as root:
        assert cluster.set("ddagent:c", "v") is True
        assert cluster.get("ddagent:c") == b"v"
        with cluster.pipeline() as pipe:
            assert pipe.set("ddagent:c", 1).incr("ddagent:c").execute() == [True, 2]
        with cluster.pipeline(transaction=True) as pipe:  # one hash slot: {tag}
            assert pipe.set("{t}a", 1).get("{t}a").execute()[-1] == b"1"
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            cluster.lpush("ddagent:c", "x")
    agent_tracer.flush(10)

    spans = [s for s in spans_named(test_agent.wait_for_traces(1), "redis.command")
             if s["parent_id"] == root.span_id]
    assert [s["resource"] for s in spans] == ["SET", "GET", "SET\nINCRBY", "SET\nGET", "LPUSH"]
    for span in spans:
        assert span["service"] == "redis"
        assert span["meta"]["db.system"] == "redis"
        assert "out.host" not in span["meta"]  # the node is chosen per command
    assert spans[1]["metrics"]["db.row_count"] == 1
    assert spans[2]["metrics"]["redis.pipeline_length"] == 2
    assert spans[3]["meta"]["redis.raw_command"] == "SET {t}a 1\nGET {t}a"
    assert spans[4]["error"] == 1
    assert spans[4]["meta"]["error.type"] == "redis.exceptions.ResponseError"
    test_agent.assert_no_check_failures()


def test_raw_command_cuts_arguments_and_the_whole():
    from ddagent.hooks.redis import COMMAND_MAX_LENGTH, _raw_command, _texts

    assert _raw_command(_texts(("GET", b"k\xff", 3, 1.5))) == "GET k\\xff 3 1.5"
    assert _raw_command(_texts(("SET", "k", "v" * 101))) == "SET k " + "v" * 100 + "..."
    many = _raw_command(_texts(("MSET", *["x" * 90] * 20)))
    assert len(many) <= COMMAND_MAX_LENGTH + len(" ...") + 20 and many.endswith("...")
    parts = many.split(" ")
    assert parts[0] == "MSET" and all(len(p) <= 93 for p in parts)
