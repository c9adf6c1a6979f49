"""Flask-Cache 0.13.1 (the seed's target; Flask 1.1 / Werkzeug 0.16, tests/envs/flask-cache-legacy)
with the simple and Redis backends: spans at the test agent, the key prefix, error replies, the
seed's get_traced_cache, runtime toggling."""

from __future__ import annotations

import pytest

flask_cache = pytest.importorskip("flask_cache")

import redis  # noqa: E402
from flask import Flask  # noqa: E402

from ddagent import probes  # noqa: E402
from ddagent.hooks.flask_caching import get_traced_cache  # noqa: E402
from ddagent.tracer import Tracer  # noqa: E402
from tests.integrations.conftest import ListWriter, enabled, spans_named  # noqa: E402

Cache = flask_cache.Cache
PROBED = [Cache.get, Cache.set, Cache.add, Cache.delete, Cache.get_many, Cache.set_many,
          Cache.delete_many, Cache.clear]
ORIGINAL_CODE = [f.__code__ for f in PROBED]


def make_cache(config: dict, cache_class: type = Cache):
    app = Flask(__name__)
    # The default with_jinja2_ext=True imports flask.ext, gone since Flask 1.0.
    return app, cache_class(app, config=config, with_jinja2_ext=False)


@pytest.fixture
def cache_probes():
    yield from enabled("flask_cache")


def test_redis_backend_spans_with_prefix(cache_probes, agent_tracer, test_agent, redis_url):
    app, cache = make_cache({"CACHE_TYPE": "redis", "CACHE_REDIS_URL": redis_url,
                             "CACHE_KEY_PREFIX": "legacy_"})
    with app.app_context(), agent_tracer.trace("app.work", service="app") as root:
        cache.set("a", 1)  # Flask-Cache's proxies drop the backend's return value
        assert cache.get("a") == 1
        assert cache.get("missing") is None
        cache.set_many({"b": 2})
        assert cache.get_many("a", "b") == [1, 2]
        cache.delete_many("a", "b")
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "flask_cache.cmd")
    assert [s["resource"] for s in spans] == [
        "set legacy_", "get legacy_", "get legacy_", "set_many legacy_", "get_many legacy_",
        "delete_many legacy_"]
    for span in spans:
        assert span["service"] == "flask-cache"
        assert span["type"] == "cache"
        assert span["parent_id"] == root.span_id
        assert span["meta"]["component"] == "flask_cache"
        assert span["meta"]["flask_cache.backend"] == "redis"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["metrics"]["network.destination.port"] == 6379
        assert span["metrics"]["out.redis_db"] == 0
    assert spans[1]["meta"]["flask_cache.key"] == "a"
    assert spans[4]["meta"]["flask_cache.key"] == "['a', 'b']"
    assert (spans[1]["metrics"]["db.row_count"], spans[2]["metrics"]["db.row_count"]) == (1, 0)
    test_agent.assert_no_check_failures()


def test_an_error_reply_marks_the_span_and_the_app_gets_redis_error(
        cache_probes, agent_tracer, test_agent, redis_url):
    app, cache = make_cache({"CACHE_TYPE": "redis", "CACHE_REDIS_URL": redis_url,
                             "CACHE_KEY_PREFIX": "legacy_"})
    client = redis.Redis.from_url(redis_url)
    client.delete("legacy_list")
    client.lpush("legacy_list", "a list, not a string")
    with app.app_context(), pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        cache.get("list")
    agent_tracer.flush(10)

    [span] = spans_named(test_agent.wait_for_traces(1), "flask_cache.cmd")
    assert span["error"] == 1
    assert span["meta"]["error.type"] == "redis.exceptions.ResponseError"


def test_simple_backend_and_get_traced_cache(list_writer):
    own_writer = ListWriter()
    own_tracer = Tracer()
    own_tracer.writer = own_writer
    try:
        app, cache = make_cache({"CACHE_TYPE": "simple"},
                                get_traced_cache(own_tracer, service="legacy-cache",
                                                 meta={"team": "x"}))
        with app.app_context():
            cache.set("k", 1)
            assert cache.get("k") == 1
            cache.clear()
    finally:
        probes.disable("flask_cache")
    assert [s.resource for s in own_writer.spans] == ["set", "get", "clear"]
    assert {s.service for s in own_writer.spans} == {"legacy-cache"}
    assert own_writer.spans[0].meta["team"] == "x"
    assert own_writer.spans[0].meta["flask_cache.backend"] == "simple"
    assert list_writer.spans == []


def test_runtime_disable_restores_code_and_status(list_writer):
    app, cache = make_cache({"CACHE_TYPE": "simple"})
    probes.enable("flask_cache")
    [row] = [r for r in probes.status() if r["name"] == "flask_cache"]
    assert row["installed"] and row["instrumented"] and row["version"] == "0.13.1"
    with app.app_context():
        cache.set("k", 1)
        probes.disable("flask_cache")
        assert all(f.__code__ is c for f, c in zip(PROBED, ORIGINAL_CODE))
        assert cache.get("k") == 1
    assert [s.resource for s in list_writer.spans] == ["set"]
