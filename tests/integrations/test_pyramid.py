"""Pyramid through WebTest and a real WSGI server (wsgiref), against the test agent."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

pytest.importorskip("pyramid")
webtest = pytest.importorskip("webtest")

from tests.apps.pyramid_app import make_app  # noqa: E402
from tests.integrations.conftest import enabled  # noqa: E402


@pytest.fixture
def pyramid_probes():
    yield from enabled("pyramid")


def roots_by_path(traces: list[list[dict]]) -> dict[str, dict]:
    roots = [s for t in traces for s in t if s["name"] == "pyramid.request"]
    return {r["meta"]["http.url"].split("/", 3)[3]: r for r in roots}


def test_webtest_requests(pyramid_probes, agent_tracer, test_agent):
    app = webtest.TestApp(make_app())
    assert app.get("/users/3", headers={"User-Agent": "ua"}).json == {"id": 3}
    assert app.get("/nowhere", status=404)
    assert app.get("/moved", status=302)
    with pytest.raises(ValueError, match="pyramid view failed"):
        app.get("/boom")
    agent_tracer.flush(10)

    roots = roots_by_path(test_agent.wait_for_traces(4))
    user = roots["users/3"]
    assert (user["name"], user["service"], user["type"]) == ("pyramid.request", "pyramid", "web")
    assert user["resource"] == "GET user"
    assert user["meta"].items() >= {
        "component": "pyramid", "span.kind": "server", "http.method": "GET",
        "http.route": "/users/{id}", "pyramid.route.name": "user", "http.status_code": "200",
        "http.useragent": "ua", "http.url": "http://localhost:80/users/3"}.items()
    assert (roots["nowhere"]["resource"], roots["nowhere"]["error"]) == ("GET 404", 0)
    moved = roots["moved"]
    assert (moved["resource"], moved["meta"]["http.status_code"], moved["error"]) == \
        ("GET moved", "302", 0)
    boom = roots["boom"]
    assert (boom["resource"], boom["error"], boom["meta"]["http.status_code"]) == \
        ("GET boom", 1, "500")
    assert boom["meta"]["error.type"] == "builtins.ValueError"


def test_render_span_under_the_request(pyramid_probes, agent_tracer, test_agent):
    webtest.TestApp(make_app()).get("/users/4")
    agent_tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    [root] = [s for s in trace if s["parent_id"] == 0]
    [render] = [s for s in trace if s["name"] == "pyramid.render"]
    assert render["parent_id"] == root["span_id"]
    assert render["type"] == "template"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_real_wsgi_server_with_trace_headers_and_streaming(pyramid_probes, agent_tracer,
                                                           test_agent):
    server = make_server("127.0.0.1", 0, make_app(), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        request = urllib.request.Request(base + "/stream", headers={
            "traceparent": "00-000000000000000000000000000004d2-00000000000010e1-01"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"first,second"
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(base + "/boom", timeout=10)
        assert error.value.code == 500
    finally:
        server.shutdown()
        server.server_close()
    agent_tracer.flush(10)

    roots = roots_by_path(test_agent.wait_for_traces(2))
    stream = roots["stream"]
    assert (stream["trace_id"], stream["parent_id"]) == (1234, 4321)
    assert (stream["resource"], stream["meta"]["http.status_code"]) == ("GET stream", "200")
    assert roots["boom"]["error"] == 1
