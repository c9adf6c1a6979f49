"""The shared WSGI request layer (hooks/wsgi.py) on a plain WSGI application."""

from __future__ import annotations

import pytest

from ddagent.hooks.registry import Integration
from ddagent.hooks.wsgi import WSGITraceMiddleware, request_span, set_route
from ddagent.propagation import HTTPPropagator
from ddagent.tracer import tracer as global_tracer
from tests.integrations.conftest import spans_named

werkzeug_test = pytest.importorskip("werkzeug.test")

DEMO = Integration("demo", service="demo", span_kind="server", probes=[])


class Boom(Exception):
    pass


def app(environ, start_response):
    """Routes: /users/<id> (routed), /missing (404), /fail (500), /raise, /stream, /stream-raise."""
    path = environ["PATH_INFO"]
    if path.startswith("/users/"):
        set_route(request_span(environ), "/users/<id>")
    if path == "/raise":
        raise Boom("view failed")
    if path.startswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(path.endswith("raise"))
    status = {"/missing": "404 NOT FOUND", "/fail": "503 SERVICE UNAVAILABLE"}.get(path, "200 OK")
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


def _stream(fail: bool):
    for i in range(3):
        with global_tracer.trace("chunk"):
            yield b"%d" % i
    if fail:
        raise Boom("stream broke")


@pytest.fixture
def client():
    return werkzeug_test.Client(WSGITraceMiddleware(app, DEMO))


def test_unread_body_does_not_parent_the_next_request(client, agent_tracer, test_agent):
    client.get("/stream")  # never read, never closed
    assert client.get("/users/1").get_data() == b"ok"
    agent_tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    assert [(s["resource"], s["parent_id"]) for s in trace] == [("GET /users/<id>", 0)]


def one_request_span(test_agent, tracer):
    tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    [span] = spans_named([trace], "demo.request")
    return trace, span


def test_routed_request(client, agent_tracer, test_agent):
    response = client.get("/users/7?token=secret", headers={"User-Agent": "probe/1"},
                          base_url="http://user:pw@example.com:8080")
    assert response.data == b"ok"
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["resource"] == "GET /users/<id>"
    assert span["type"] == "web"
    assert span["service"] == "demo"
    assert span["parent_id"] == 0
    assert span["error"] == 0
    meta = span["meta"]
    assert meta["component"] == "demo"
    assert meta["span.kind"] == "server"
    assert meta["http.method"] == "GET"
    assert meta["http.url"] == "http://example.com:8080/users/7"
    assert meta["http.route"] == "/users/<id>"
    assert meta["http.status_code"] == "200"
    assert meta["http.useragent"] == "probe/1"
    assert span["metrics"]["_dd.measured"] == 1
    test_agent.assert_no_check_failures()


def test_not_found_is_not_an_error(client, agent_tracer, test_agent):
    assert client.get("/missing", buffered=True).status_code == 404
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["resource"] == "GET 404"
    assert span["meta"]["http.status_code"] == "404"
    assert span["error"] == 0


def test_server_error_status_is_an_error(client, agent_tracer, test_agent):
    assert client.post("/fail", buffered=True).status_code == 503
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["resource"] == "POST"
    assert span["error"] == 1


def test_exception_is_recorded_and_reraised(client, agent_tracer, test_agent):
    with pytest.raises(Boom, match="view failed"):
        client.get("/raise")
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["error"] == 1
    assert span["meta"]["http.status_code"] == "500"
    assert span["meta"]["error.type"] == f"{__name__}.Boom"
    assert span["meta"]["error.message"] == "view failed"


def test_streamed_body_is_covered_until_closed(client, agent_tracer, test_agent):
    response = client.get("/stream")
    assert global_tracer.current_span() is None  # not active while the body waits
    agent_tracer.flush(10)
    assert test_agent.traces() == []  # still open: the body is not read yet
    assert response.get_data() == b"012"
    response.close()
    trace, span = one_request_span(test_agent, agent_tracer)
    chunks = spans_named([trace], "chunk")
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk["parent_id"] == span["span_id"]
        assert chunk["start"] + chunk["duration"] <= span["start"] + span["duration"]


def test_error_while_streaming(client, agent_tracer, test_agent):
    with pytest.raises(Boom, match="stream broke"):
        client.get("/stream-raise", buffered=True)
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["error"] == 1
    assert span["meta"]["error.message"] == "stream broke"


def test_datadog_headers_continue_the_trace(client, agent_tracer, test_agent):
    client.get("/users/1", buffered=True,
               headers={"x-datadog-trace-id": "1234", "x-datadog-parent-id": "5678",
                        "x-datadog-sampling-priority": "2"})
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["trace_id"] == 1234
    assert span["parent_id"] == 5678
    assert span["metrics"]["_sampling_priority_v1"] == 2


def test_w3c_headers_continue_the_trace(client, agent_tracer, test_agent):
    with agent_tracer.trace("caller") as caller:
        headers: dict = {}
        HTTPPropagator.inject(caller, headers)
        w3c = {"traceparent": headers["traceparent"], "tracestate": headers["tracestate"]}
    agent_tracer.flush(10)
    test_agent.wait_for_traces(1)
    test_agent.start_session()
    client.get("/users/1", headers=w3c, buffered=True)
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["trace_id"] == caller.trace_id & (2**64 - 1)
    assert span["parent_id"] == caller.span_id


@pytest.mark.parametrize("headers", [
    {"x-datadog-trace-id": "not-a-number", "x-datadog-parent-id": "-5"},
    {"traceparent": "00-zzzz-1-01", "x-datadog-tags": "=" * 600},
    {"x-datadog-trace-id": "0", "traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
])
def test_garbage_headers_give_a_fresh_trace(client, agent_tracer, test_agent, headers):
    assert client.get("/users/1", headers=headers, buffered=True).status_code == 200
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["parent_id"] == 0
    assert span["trace_id"] not in (0, 1)


def test_two_layers_trace_the_request_once(agent_tracer, test_agent):
    outer = WSGITraceMiddleware(WSGITraceMiddleware(app, DEMO, service="inner"), DEMO,
                                service="outer")
    werkzeug_test.Client(outer).get("/users/3", buffered=True)
    agent_tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    assert [(s["name"], s["service"]) for s in trace] == [("demo.request", "outer")]
    assert trace[0]["resource"] == "GET /users/<id>"


def test_disabled_tracer_passes_through(client, agent_tracer, test_agent, monkeypatch):
    monkeypatch.setattr(agent_tracer, "enabled", False)
    assert client.get("/users/1").data == b"ok"
    assert agent_tracer.current_span() is None
