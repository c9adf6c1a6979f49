"""Falcon 4, instrumented by the import hook, through falcon.testing; the seed's middleware."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrations.conftest import enabled, spans_named

falcon = pytest.importorskip("falcon")
falcon_testing = pytest.importorskip("falcon.testing")

APPS = Path(__file__).resolve().parent.parent / "apps"


@pytest.fixture
def falcon_app(monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.delenv("DD_SERVICE", raising=False)
    import falcon_app

    return falcon_app


@pytest.fixture
def client(falcon_app):
    yield from enabled("falcon")


def root_of(test_agent, tracer):
    tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    [root] = spans_named([trace], "falcon.request")
    return trace, root


def test_routed_request(falcon_app, client, agent_tracer, test_agent):
    result = falcon_testing.TestClient(falcon_app.app).simulate_get(
        "/users/5", query_string="q=1", headers={"User-Agent": "probe/3"})
    assert result.json == {"id": 5}
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == "GET falcon_app.UserResource"
    assert root["service"] == "falcon"
    assert root["type"] == "web"
    assert root["error"] == 0
    meta = root["meta"]
    assert meta["http.route"] == "/users/{user_id:int}"
    assert meta["http.url"] == "http://falconframework.org/users/5"
    assert meta["http.status_code"] == "200"
    assert meta["http.useragent"] == "probe/3"
    assert meta["component"] == "falcon"
    assert meta["span.kind"] == "server"
    test_agent.assert_no_check_failures()


def test_not_found(falcon_app, client, agent_tracer, test_agent):
    assert falcon_testing.TestClient(falcon_app.app).simulate_get("/nope").status_code == 404
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == "GET 404"
    assert root["error"] == 0


def test_responder_raising_gives_a_500_error(falcon_app, client, agent_tracer, test_agent):
    assert falcon_testing.TestClient(falcon_app.app).simulate_get("/fail").status_code == 500
    _, root = root_of(test_agent, agent_tracer)
    assert root["resource"] == "GET falcon_app.FailResource"
    assert root["meta"]["http.status_code"] == "500"
    assert root["error"] == 1
    assert root["meta"]["error.type"] == "builtins.ValueError"
    assert root["meta"]["error.message"] == "the responder failed"


def test_streamed_response_is_covered(falcon_app, client, agent_tracer, test_agent):
    result = falcon_testing.TestClient(falcon_app.app).simulate_get("/stream")
    assert result.text == "0\n1\n2\n"
    trace, root = root_of(test_agent, agent_tracer)
    chunks = spans_named([trace], "stream.chunk")
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk["parent_id"] == root["span_id"]
        assert chunk["start"] + chunk["duration"] <= root["start"] + root["duration"]


@pytest.mark.parametrize("auto", [True, False], ids=["with-auto", "middleware-only"])
def test_seed_trace_middleware(auto, falcon_app, agent_tracer, test_agent):
    from ddagent import probes
    from ddagent.hooks.falcon import TraceMiddleware

    if auto:
        probes.enable("falcon")
    try:
        app = falcon_app.make_app(middleware=[TraceMiddleware(agent_tracer, service="seed")])
        client = falcon_testing.TestClient(app)
        assert client.simulate_get("/users/1").status_code == 200
        assert client.simulate_get("/nope").status_code == 404
    finally:
        probes.disable("falcon")
    agent_tracer.flush(10)
    roots = spans_named(test_agent.wait_for_traces(2), "falcon.request")
    assert sorted((s["resource"], s["service"], s["meta"]["http.status_code"]) for s in roots) == [
        ("GET 404", "seed", "404"), ("GET falcon_app.UserResource", "seed", "200")]
