"""Flask, instrumented by the import hook (no middleware by hand), with Flask's test client."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from ddagent import probes
from ddagent.pin import Pin
from tests.integrations.conftest import enabled, spans_named

flask = pytest.importorskip("flask")

APPS = Path(__file__).resolve().parent.parent / "apps"
SUB_SPANS = ["flask.preprocess_request", "flask.process_response", "flask.do_teardown_request",
             "flask.do_teardown_appcontext"]


@pytest.fixture
def flask_probes():
    yield from enabled("flask")


@pytest.fixture
def flask_app(monkeypatch):
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.delenv("DD_SERVICE", raising=False)
    import flask_app

    return flask_app.app


@pytest.fixture
def client(flask_app, flask_probes):
    return flask_app.test_client()


def request_trace(test_agent, tracer):
    tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    [root] = spans_named([trace], "flask.request")
    return trace, root


def test_routed_view_with_template(client, agent_tracer, test_agent):
    response = client.get("/users/7?debug=1", headers={"User-Agent": "probe/2"}, buffered=True)
    assert response.data == b"<p>user 7</p>"
    trace, root = request_trace(test_agent, agent_tracer)

    assert root["resource"] == "GET /users/<int:user_id>"
    assert root["service"] == "flask"
    assert root["type"] == "web"
    assert root["parent_id"] == 0
    assert root["error"] == 0
    meta = root["meta"]
    assert meta["component"] == "flask"
    assert meta["span.kind"] == "server"
    assert meta["http.method"] == "GET"
    assert meta["http.url"] == "http://localhost/users/7"
    assert meta["http.route"] == "/users/<int:user_id>"
    assert meta["http.status_code"] == "200"
    assert meta["http.useragent"] == "probe/2"
    assert meta["flask.endpoint"] == "user"
    assert meta["flask.url_rule"] == "/users/<int:user_id>"
    assert meta["flask.version"] == importlib.metadata.version("flask")
    assert root["metrics"]["_dd.measured"] == 1

    by_name = {s["name"]: s for s in trace}
    for name in [*SUB_SPANS, "flask_app.user"]:
        span = by_name[name]
        assert span["parent_id"] == root["span_id"], name
        assert span["service"] == "flask"
        assert span["meta"]["component"] == "flask"
        assert "span.kind" not in span["meta"]
        assert "_dd.measured" not in span["metrics"]
    assert by_name["flask_app.user"]["resource"] == "/users/<int:user_id>"
    template = by_name["flask.render_template"]
    assert template["parent_id"] == by_name["flask_app.user"]["span_id"]
    assert template["type"] == "template"
    assert template["resource"] == "user.html"
    assert template["meta"]["flask.template_name"] == "user.html"
    test_agent.assert_no_check_failures()


def test_hook_phases_without_hooks_have_no_span(flask_probes, agent_tracer, test_agent):
    bare = flask.Flask("bare")
    bare.add_url_rule("/", "index", lambda: "hello")
    assert bare.test_client().get("/").data == b"hello"
    trace, root = request_trace(test_agent, agent_tracer)
    assert sorted(s["name"] for s in trace) == ["flask.request", f"{__name__}.<lambda>"]


def test_not_found(client, agent_tracer, test_agent):
    assert client.get("/nope", buffered=True).status_code == 404
    trace, root = request_trace(test_agent, agent_tracer)
    assert root["resource"] == "GET 404"
    assert root["meta"]["http.status_code"] == "404"
    assert root["error"] == 0
    assert "http.route" not in root["meta"]
    assert {s["name"] for s in trace if s["name"].endswith("exception")} == {
        "flask.handle_user_exception", "flask.handle_http_exception"}


def test_view_raising_gives_a_500_error(client, agent_tracer, test_agent):
    assert client.get("/fail", buffered=True).status_code == 500
    trace, root = request_trace(test_agent, agent_tracer)
    assert root["resource"] == "GET /fail"
    assert root["meta"]["http.status_code"] == "500"
    assert root["error"] == 1
    assert root["meta"]["error.type"] == "builtins.ValueError"
    assert root["meta"]["error.message"] == "the view failed"
    assert "in fail" in root["meta"]["error.stack"]
    [view] = spans_named([trace], "flask_app.fail")
    assert view["error"] == 1
    assert spans_named([trace], "flask.handle_exception")


def test_error_handler_response_is_not_an_error(client, agent_tracer, test_agent):
    assert client.get("/teapot", buffered=True).status_code == 418
    trace, root = request_trace(test_agent, agent_tracer)
    assert root["error"] == 0
    assert root["meta"]["http.status_code"] == "418"
    [handler] = spans_named([trace], "flask.handle_user_exception")
    assert handler["error"] == 0


def test_streamed_response_is_covered(client, agent_tracer, test_agent):
    response = client.get("/stream")
    agent_tracer.flush(10)
    assert test_agent.traces() == []  # the body is not read yet
    assert response.data == b"0\n1\n2\n"
    response.close()
    trace, root = request_trace(test_agent, agent_tracer)
    chunks = spans_named([trace], "stream.chunk")
    assert len(chunks) == 3
    end = root["start"] + root["duration"]
    for chunk in chunks:
        assert chunk["parent_id"] == root["span_id"]
        assert chunk["start"] + chunk["duration"] <= end


def test_pin_and_env_service(client, flask_app, agent_tracer, test_agent, monkeypatch):
    monkeypatch.setenv("DD_FLASK_SERVICE", "from-env")
    client.get("/", buffered=True)
    _, root = request_trace(test_agent, agent_tracer)
    assert root["service"] == "from-env"
    test_agent.start_session()
    Pin.override(flask_app, service="from-pin")
    try:
        client.get("/", buffered=True)
        trace, root = request_trace(test_agent, agent_tracer)
    finally:
        Pin.override(flask_app, service=None)
    assert root["service"] == "from-pin"
    assert {s["service"] for s in trace} == {"from-pin"}


def test_disabled_integration_restores_flask(flask_app, agent_tracer, test_agent):
    wsgi_app = vars(flask.Flask)["wsgi_app"]
    probes.enable("flask")
    assert vars(flask.Flask)["wsgi_app"] is not wsgi_app
    probes.disable("flask")
    assert vars(flask.Flask)["wsgi_app"] is wsgi_app
    assert flask_app.test_client().get("/", buffered=True).data == b"hello"
    agent_tracer.flush(10)
    assert test_agent.traces() == []


@pytest.mark.parametrize("auto", [True, False], ids=["with-auto", "middleware-only"])
def test_seed_trace_middleware(auto, agent_tracer, test_agent, monkeypatch):
    from ddagent.hooks.flask import TraceMiddleware

    if auto:
        probes.enable("flask")
    try:
        app = flask.Flask("seed")

        @app.route("/items/<name>")
        def item(name):
            return name

        @app.route("/bad")
        def bad():
            raise KeyError("k")

        TraceMiddleware(app, agent_tracer, service="seed-svc")
        client = app.test_client()
        assert client.get("/items/a", buffered=True).data == b"a"
        assert client.get("/bad", buffered=True).status_code == 500
    finally:
        probes.disable("flask")
    agent_tracer.flush(10)
    traces = test_agent.wait_for_traces(2)
    roots = spans_named(traces, "flask.request")
    assert len(roots) == 2  # one request span per request, never two
    ok, bad = sorted(roots, key=lambda s: s["resource"])[::-1]
    assert ok["resource"] == "GET /items/<name>"
    assert ok["service"] == "seed-svc"
    assert ok["meta"]["flask.endpoint"] == "item"
    assert bad["error"] == 1
    assert bad["meta"]["error.type"] == "builtins.KeyError"
    has_sub_spans = bool(spans_named(traces, f"{__name__}.item"))
    assert has_sub_spans == auto
