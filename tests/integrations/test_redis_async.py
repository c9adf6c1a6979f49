"""redis.asyncio against the real Redis (and a Redis cluster started here): the span covers the
awaited command, pipelines and transactions, error replies, concurrent tasks, runtime toggling."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ddagent import probes
from ddagent.hooks import rewrite
from tests.integrations import servers
from tests.integrations.conftest import enabled, spans_named

PROBED = [Redis.execute_command, redis.asyncio.client.Pipeline.execute,
          redis.asyncio.client.Pipeline.immediate_execute_command,
          RedisCluster.execute_command, redis.asyncio.cluster.ClusterPipeline.execute]
ORIGINAL_CODE = [f.__code__ for f in PROBED]


@pytest.fixture
def redis_probes():
    yield from enabled("redis")


def with_client(redis_url: str, work):
    """Run ``await work(client)`` on a fresh asyncio client in a new event loop."""
    async def main():
        client = Redis.from_url(redis_url)
        try:
            await client.delete("ddagent:a")
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_commands_pipeline_and_errors(redis_probes, redis_url, agent_tracer, test_agent):
    async def work(client):
        with agent_tracer.trace("app.work", service="app") as root:
            assert await client.set("ddagent:a", "v") is True
            assert await client.get("ddagent:a") == b"v"
            assert await client.get("ddagent:missing") is None
            async with client.pipeline(transaction=True) as pipe:
                assert await pipe.set("ddagent:a", 1).incr("ddagent:a").execute() == [True, 2]
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await client.lpush("ddagent:a", "x")
        return root

    root = with_client(redis_url, work)
    agent_tracer.flush(10)

    spans = [s for s in spans_named(test_agent.wait_for_traces(1), "redis.command")
             if s["parent_id"] == root.span_id]
    assert [s["resource"] for s in spans] == ["SET", "GET", "GET", "SET\nINCRBY", "LPUSH"]
    for span in spans:
        assert span["service"] == "redis"
        assert span["type"] == "redis"
        assert span["meta"]["component"] == "redis"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["metrics"]["network.destination.port"] == 6379
    hit, miss, pipeline, error = spans[1:]
    assert (hit["metrics"]["db.row_count"], miss["metrics"]["db.row_count"]) == (1, 0)
    assert pipeline["meta"]["redis.raw_command"] == "SET ddagent:a 1\nINCRBY ddagent:a 1"
    assert error["error"] == 1
    assert error["meta"]["error.type"] == "redis.exceptions.ResponseError"
    test_agent.assert_no_check_failures()


def test_transaction_with_watch(redis_probes, redis_url, list_writer):
    async def increment(pipe):
        value = int(await pipe.get("ddagent:a"))
        pipe.multi()
        pipe.set("ddagent:a", value + 1)

    async def work(client):
        await client.set("ddagent:a", 1)
        return await client.transaction(increment, "ddagent:a")

    assert with_client(redis_url, work) == [True]
    assert [s.resource for s in list_writer.spans] == ["DEL", "SET", "WATCH", "GET", "SET"]


def test_concurrent_tasks_get_their_own_parents(redis_probes, redis_url, list_writer):
    """Each task's command is a child of that task's span, though the awaits interleave."""
    async def task(client, tracer, i):
        with tracer.trace(f"task{i}") as parent:
            await client.set(f"ddagent:t{i}", i)
            await asyncio.sleep(0)
            await client.get(f"ddagent:t{i}")
        return parent.span_id

    from ddagent.tracer import tracer

    async def work(client):
        return await asyncio.gather(*(task(client, tracer, i) for i in range(5)))

    parents = with_client(redis_url, work)
    for i, parent_id in enumerate(parents):
        children = [s for s in list_writer.spans if s.parent_id == parent_id]
        assert [s.meta["redis.raw_command"] for s in children] == [
            f"SET ddagent:t{i} {i}", f"GET ddagent:t{i}"]


@pytest.fixture(scope="module")
def cluster_ports():
    with servers.redis_cluster() as ports:
        yield ports


def test_cluster_client_and_pipeline(redis_probes, cluster_ports, list_writer):
    async def main():
        client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
        try:
            await client.set("ddagent:c", "v")
            assert await client.get("ddagent:c") == b"v"
            async with client.pipeline() as pipe:
                assert await pipe.set("ddagent:c", 1).incr("ddagent:c").execute() == [True, 2]
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await client.lpush("ddagent:c", "x")
        finally:
            await client.aclose()

    asyncio.run(main())
    spans = list_writer.spans
    assert [s.resource for s in spans] == ["SET", "GET", "SET\nINCRBY", "LPUSH"]
    assert spans[1].metrics["db.row_count"] == 1
    assert spans[2].metrics["redis.pipeline_length"] == 2
    assert [s.error for s in spans] == [0, 0, 0, 1]
    assert all("out.host" not in s.meta for s in spans)


def test_disable_restores_the_coroutines(redis_url, list_writer):
    probes.enable("redis")
    assert all(rewrite.is_instrumented(f) for f in PROBED)
    probes.disable("redis")
    assert all(f.__code__ is c for f, c in zip(PROBED, ORIGINAL_CODE))

    async def work(client):
        await client.set("ddagent:a", 1)

    with_client(redis_url, work)
    assert list_writer.spans == []
