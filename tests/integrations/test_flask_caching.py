"""Flask-Caching with simple, Redis and memcached backends: spans at the test agent, the key
prefix, error replies, the seed's get_traced_cache, runtime toggling."""

from __future__ import annotations

import importlib.metadata
from contextlib import contextmanager

import pytest

flask_caching = pytest.importorskip("flask_caching")

import redis  # noqa: E402
from flask import Flask  # noqa: E402

from ddagent import probes  # noqa: E402
from ddagent.hooks.flask_caching import get_traced_cache  # noqa: E402
from ddagent.pin import Pin  # noqa: E402
from ddagent.stats import STATS  # noqa: E402
from ddagent.tracer import Tracer  # noqa: E402
from tests.integrations import servers  # noqa: E402
from tests.integrations.conftest import ListWriter, enabled, spans_named  # noqa: E402

Cache = flask_caching.Cache
PROBED = [Cache.get, Cache.set, Cache.get_many, Cache.set_many, Cache.delete_many, Cache.clear]
ORIGINAL_CODE = [f.__code__ for f in PROBED]


@pytest.fixture
def cache_probes():
    yield from enabled("flask_cache")


@pytest.fixture
def redis_probes():
    yield from enabled("redis")


def make_cache(config: dict, cache_class: type = Cache):
    app = Flask(__name__)
    cache = cache_class(app, config=config)
    return app, cache


@pytest.fixture
def redis_cache(redis_url):
    app, cache = make_cache({"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_url,
                             "CACHE_KEY_PREFIX": "ddagent_"})
    with app.app_context():
        cache.delete_many("a", "b", "c", "text")
        yield cache


def test_redis_backend_spans_with_prefix_and_backend_children(
        probe_mechanism, cache_probes, redis_probes, redis_cache, agent_tracer, test_agent):
    with agent_tracer.trace("app.work", service="app") as root:
        assert redis_cache.set("a", {"x": 1}) is True
        assert redis_cache.get("a") == {"x": 1}
        assert redis_cache.get("missing") is None
        assert redis_cache.set_many({"b": 2, "c": 3}) == ["b", "c"]
        assert redis_cache.get_many("a", "b", "missing") == [{"x": 1}, 2, None]
        assert redis_cache.delete_many("b", "c") == ["b", "c"]
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    spans = spans_named([trace], "flask_cache.cmd")
    assert [s["resource"] for s in spans] == [
        "set ddagent_", "get ddagent_", "get ddagent_", "set_many ddagent_", "get_many ddagent_",
        "delete_many ddagent_"]
    for span in spans:
        assert span["service"] == "flask-cache"
        assert span["type"] == "cache"
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
        assert span["meta"]["component"] == "flask_cache"
        assert span["meta"]["flask_cache.backend"] == "RedisCache"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["meta"]["server.address"] == "127.0.0.1"
        assert "span.kind" not in span["meta"] and "db.system" not in span["meta"]
        assert span["metrics"]["network.destination.port"] == 6379
        assert span["metrics"]["out.redis_db"] == 0
    set_a, hit, miss, set_many, get_many, delete_many = spans
    assert set_a["meta"]["flask_cache.key"] == "a"
    assert set_many["meta"]["flask_cache.key"] == "['b', 'c']"
    assert get_many["meta"]["flask_cache.key"] == "['a', 'b', 'missing']"
    assert (hit["metrics"]["db.row_count"], miss["metrics"]["db.row_count"]) == (1, 0)
    assert get_many["metrics"]["db.row_count"] == 2

    # The backend's own Redis commands are children, and show the prefix really applied.
    by_id = {s["span_id"]: s for s in trace}
    redis_spans = spans_named([trace], "redis.command")
    assert redis_spans and all(by_id[s["parent_id"]]["name"] == "flask_cache.cmd"
                               for s in redis_spans)
    assert redis_spans[1]["meta"]["redis.raw_command"] == "GET ddagent_a"
    test_agent.assert_no_check_failures()


def test_an_error_reply_marks_the_span_and_the_app_gets_redis_error(
        cache_probes, redis_cache, agent_tracer, test_agent, redis_url):
    redis.Redis.from_url(redis_url).lpush("ddagent_text", "a list, not a string")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        redis_cache.get("text")
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "flask_cache.cmd")
    assert span["error"] == 1
    assert span["meta"]["error.type"] == "redis.exceptions.ResponseError"
    assert "WRONGTYPE" in span["meta"]["error.message"]
    assert span["meta"]["flask_cache.key"] == "text"


def test_memcached_backend_through_pylibmc(cache_probes, agent_tracer, test_agent):
    pytest.importorskip("pylibmc")
    with servers.memcached() as address, contextmanager(enabled)("pylibmc"):
        app, cache = make_cache({"CACHE_TYPE": "MemcachedCache",
                                 "CACHE_MEMCACHED_SERVERS": [address],
                                 "CACHE_KEY_PREFIX": "app1:"})
        with app.app_context():
            cache.set("k", "v")
            assert cache.get("k") == "v"
        agent_tracer.flush(10)

        traces = test_agent.wait_for_traces(2)
    spans = spans_named(traces, "flask_cache.cmd")
    assert [s["resource"] for s in spans] == ["set app1:", "get app1:"]
    assert spans[0]["meta"]["flask_cache.backend"] == "MemcachedCache"
    assert spans[0]["meta"]["out.host"] == "127.0.0.1"
    assert spans[0]["metrics"]["network.destination.port"] == int(address.rsplit(":", 1)[1])
    memcached = spans_named(traces, "memcached.cmd")
    assert [s["meta"]["memcached.query"] for s in memcached] == ["set app1:k", "get app1:k"]


def test_simple_backend_cached_view_and_env_service(cache_probes, list_writer, monkeypatch):
    monkeypatch.setenv("DD_FLASK_CACHE_SERVICE", "cache-from-env")
    app, cache = make_cache({"CACHE_TYPE": "SimpleCache"})

    @app.route("/")
    @cache.cached(timeout=60)
    def index():
        return "hello"

    client = app.test_client()
    assert client.get("/").data == b"hello"
    assert client.get("/").data == b"hello"
    with app.app_context():
        assert cache.clear() is True
    resources = [s.resource for s in list_writer.spans]
    assert resources == ["get", "set", "get", "clear"]  # SimpleCache has no key prefix
    assert {s.service for s in list_writer.spans} == {"cache-from-env"}
    assert list_writer.spans[0].meta["flask_cache.backend"] == "SimpleCache"
    assert list_writer.spans[0].meta["flask_cache.key"] == "view//"
    assert "out.host" not in list_writer.spans[0].meta


def test_no_app_context_is_the_apps_own_error(list_writer):
    cache = Cache(config={"CACHE_TYPE": "SimpleCache"})  # never bound to an app
    errors_before = STATS.get("probes.errors.flask_cache")
    with pytest.raises(Exception) as untraced:
        cache.get("k")
    probes.enable("flask_cache")
    try:
        with pytest.raises(type(untraced.value), match=str(untraced.value)):
            cache.get("k")
    finally:
        probes.disable("flask_cache")
    [span] = list_writer.spans
    assert span.error == 1 and span.resource == "get"
    assert STATS.get("probes.errors.flask_cache") == errors_before  # not a probe error


def test_get_traced_cache_uses_its_tracer_service_and_meta(list_writer):
    own_writer = ListWriter()
    own_tracer = Tracer()
    own_tracer.writer = own_writer
    try:
        traced_class = get_traced_cache(own_tracer, service="my-cache", meta={"team": "x"})
        assert issubclass(traced_class, Cache)
        app, traced = make_cache({"CACHE_TYPE": "SimpleCache"}, traced_class)
        plain = Cache(app, config={"CACHE_TYPE": "SimpleCache"})
        with app.app_context():
            traced.set("k", 1)
            plain.set("k", 2)
        [span] = own_writer.spans
        assert (span.service, span.resource, span.meta["team"]) == ("my-cache", "set", "x")
        [other] = list_writer.spans  # a plain Cache is traced too, with the defaults
        assert other.service == "flask-cache" and "team" not in other.meta
        Pin.override(traced, service="per-instance")
        with app.app_context():
            traced.get("k")
        assert own_writer.spans[-1].service == "per-instance"
    finally:
        probes.disable("flask_cache")


def test_runtime_disable_restores_code_and_enable_traces_again(list_writer):
    app, cache = make_cache({"CACHE_TYPE": "SimpleCache"})
    probes.enable("flask_cache")
    with app.app_context():
        cache.set("k", 1)
        probes.disable("flask_cache")
        assert all(f.__code__ is c for f, c in zip(PROBED, ORIGINAL_CODE))
        assert cache.get("k") == 1
        assert len(list_writer.spans) == 1
        probes.enable("flask_cache")
        try:
            assert cache.get("k") == 1
        finally:
            probes.disable("flask_cache")
    assert [s.resource for s in list_writer.spans] == ["set", "get"]
    [row] = [r for r in probes.status() if r["name"] == "flask_cache"]
    assert row["installed"] and row["version"] == importlib.metadata.version("flask-caching")
