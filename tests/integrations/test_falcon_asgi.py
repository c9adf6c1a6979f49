"""Falcon's ASGI app (``falcon.asgi.App``), instrumented by the import hook, driven in-process
through falcon.testing (which runs the ASGI app on an event loop); the spans must be the ones
the WSGI app gives (test_falcon.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integrations.conftest import enabled, spans_named

falcon = pytest.importorskip("falcon")
falcon_asgi = pytest.importorskip("falcon.asgi")
falcon_testing = pytest.importorskip("falcon.testing")

from ddagent import probes, tracer  # noqa: E402
from tests.integrations.test_falcon import root_of  # noqa: E402


class UserResource:
    async def on_get(self, req, resp, user_id):
        with tracer.trace("user.lookup"):
            resp.media = {"id": user_id}


class FailResource:
    async def on_get(self, req, resp):
        raise ValueError("the responder failed")


class GoneResource:
    async def on_get(self, req, resp):
        raise falcon.HTTPNotFound()


MODULE = __name__


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("DD_SERVICE", raising=False)
    for _ in enabled("falcon"):
        app = falcon_asgi.App()
        app.add_route("/users/{user_id:int}", UserResource())
        app.add_route("/fail", FailResource())
        app.add_route("/gone", GoneResource())
        yield falcon_testing.TestClient(app)


def test_routed_async_responder(client, agent_tracer, test_agent):
    result = client.simulate_get("/users/5", query_string="q=1",
                                 headers={"User-Agent": "probe/3"})
    assert result.json == {"id": 5}
    trace, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == f"GET {MODULE}.UserResource"
    assert root["service"] == "falcon"
    assert root["type"] == "web"
    assert root["error"] == 0
    meta = root["meta"]
    assert meta["http.route"] == "/users/{user_id:int}"
    assert meta["http.url"] == "http://falconframework.org/users/5"
    assert meta["http.method"] == "GET"
    assert meta["http.status_code"] == "200"
    assert meta["http.useragent"] == "probe/3"
    assert meta["component"] == "falcon"
    assert meta["span.kind"] == "server"
    assert root["metrics"]["_dd.measured"] == 1
    [child] = spans_named([trace], "user.lookup")
    assert child["parent_id"] == root["span_id"]
    test_agent.assert_no_check_failures()


def test_not_found(client, agent_tracer, test_agent):
    assert client.simulate_get("/nope").status_code == 404
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == "GET 404"
    assert root["meta"]["http.status_code"] == "404"
    assert root["error"] == 0


def test_http_error_below_500_is_not_an_error(client, agent_tracer, test_agent):
    assert client.simulate_get("/gone").status_code == 404
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == f"GET {MODULE}.GoneResource"
    assert root["meta"]["http.status_code"] == "404"
    assert root["error"] == 0
    assert "error.type" not in root["meta"]


def test_responder_raising_gives_a_500_error(client, agent_tracer, test_agent):
    assert client.simulate_get("/fail").status_code == 500
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == f"GET {MODULE}.FailResource"
    assert root["meta"]["http.status_code"] == "500"
    assert root["error"] == 1
    assert root["meta"]["error.type"] == "builtins.ValueError"
    assert root["meta"]["error.message"] == "the responder failed"
    assert "ValueError" in root["meta"]["error.stack"]


def test_propagation_headers_continue_the_trace(client, agent_tracer, test_agent):
    headers = {"x-datadog-trace-id": "1234", "x-datadog-parent-id": "5678",
               "x-datadog-sampling-priority": "2"}
    assert client.simulate_get("/users/1", headers=headers).status_code == 200
    trace, root = root_of(test_agent, agent_tracer)
    assert (root["trace_id"], root["parent_id"]) == (1234, 5678)
    assert {s["trace_id"] for s in trace} == {1234}
    # The upstream's decision, on the chunk root (the chunk's first span).
    assert trace[0]["metrics"]["_sampling_priority_v1"] == 2


def test_disable_at_run_time_stops_spans(client, agent_tracer, test_agent):
    probes.disable("falcon")
    try:
        assert client.simulate_get("/users/2").json == {"id": 2}
        assert client.simulate_get("/fail").status_code == 500
    finally:
        probes.enable("falcon")
    assert client.simulate_get("/users/3").status_code == 200
    agent_tracer.flush(10)
    roots = spans_named(test_agent.wait_for_traces(1), "falcon.request")
    assert [r["meta"]["http.url"] for r in roots] == ["http://falconframework.org/users/3"]


def test_lifespan_is_not_traced(client, agent_tracer, test_agent):
    events = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
    sent = []

    async def receive():
        return events.pop()

    async def send(message):
        sent.append(message["type"])

    # A loop of its own, not asyncio.run: that leaves no current loop, which Falcon 3's
    # TestClient (asyncio.get_event_loop) needs afterwards.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(
            client.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    finally:
        loop.close()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert client.simulate_get("/users/4").status_code == 200
    agent_tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    assert [s["name"] for s in spans_named([trace], "falcon.request")] == ["falcon.request"]


def test_seed_middleware_stays_wsgi_only():
    from ddagent.hooks.falcon import TraceMiddleware

    with pytest.raises(falcon.CompatibilityError):
        falcon_asgi.App(middleware=[TraceMiddleware()])
