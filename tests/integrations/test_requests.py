"""requests and urllib3 client spans against a real local HTTP server, with header injection."""

from __future__ import annotations

import http.server
import threading

import pytest

from ddagent.suppress import SUPPRESSED
from tests.integrations.conftest import enabled, spans_named

requests = pytest.importorskip("requests")
urllib3 = pytest.importorskip("urllib3")


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802 - the http.server API
        Handler.seen.append({k.lower(): v for k, v in self.headers.items()})
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client_probes():
    Handler.seen.clear()
    yield from enabled("urllib3")


@pytest.fixture
def requests_probes(client_probes):
    yield from enabled("requests")


def test_requests_span_and_propagation(requests_probes, server, agent_tracer, test_agent):
    with agent_tracer.trace("caller") as caller:
        response = requests.get(f"http://user:secret@{server}/users/1?token=x")
    assert response.text == "ok"
    agent_tracer.flush(10)
    [trace] = test_agent.wait_for_traces(1)
    assert [s["name"] for s in trace if s["name"] != "caller"] == ["requests.request"]
    [span] = spans_named([trace], "requests.request")
    assert span["parent_id"] == caller.span_id
    assert span["service"] == "requests"
    assert span["type"] == "http"
    assert span["resource"] == "GET /users/1"
    assert span["error"] == 0
    meta = span["meta"]
    assert meta["http.url"] == f"http://{server}/users/1"
    assert meta["http.method"] == "GET"
    assert meta["http.status_code"] == "200"
    assert meta["out.host"] == "127.0.0.1"
    assert meta["span.kind"] == "client"
    assert meta["component"] == "requests"
    [headers] = Handler.seen
    assert int(headers["x-datadog-trace-id"]) == span["trace_id"]
    assert int(headers["x-datadog-parent-id"]) == span["span_id"]
    assert headers["traceparent"].split("-")[2] == f"{span['span_id']:016x}"
    test_agent.assert_no_check_failures()


def test_requests_client_error_and_exception(requests_probes, server, agent_tracer, test_agent):
    assert requests.get(f"http://{server}/missing").status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:1/refused")
    agent_tracer.flush(10)
    spans = spans_named(test_agent.wait_for_traces(2), "requests.request")
    missing, refused = sorted(spans, key=lambda s: s["resource"])
    assert missing["error"] == 1
    assert missing["meta"]["http.status_code"] == "404"
    assert refused["resource"] == "GET /refused"
    assert refused["error"] == 1
    assert refused["meta"]["error.type"] == "requests.exceptions.ConnectionError"


def test_urllib3_span_copies_the_callers_headers(client_probes, server, agent_tracer,
                                                  test_agent):
    mine = {"X-Mine": "1"}
    with urllib3.PoolManager() as pool:
        response = pool.request("GET", f"http://{server}/path?q=1", headers=mine)
    assert response.status == 200
    assert mine == {"X-Mine": "1"}
    agent_tracer.flush(10)
    [span] = spans_named(test_agent.wait_for_traces(1), "urllib3.request")
    assert span["resource"] == "GET /path"
    assert span["service"] == "urllib3"
    assert span["meta"]["http.url"] == f"http://{server}/path"
    assert span["meta"]["http.status_code"] == "200"
    [headers] = Handler.seen
    assert headers["x-mine"] == "1"
    assert int(headers["x-datadog-parent-id"]) == span["span_id"]


def test_nothing_is_traced_inside_the_writer(requests_probes, server, agent_tracer, test_agent):
    token = SUPPRESSED.set(True)
    try:
        requests.get(f"http://{server}/quiet")
    finally:
        SUPPRESSED.reset(token)
    agent_tracer.flush(10)
    assert test_agent.traces() == []
    assert "x-datadog-trace-id" not in Handler.seen[0]
