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
    client.get("/stream")  # never read, never closed: dropped at once
    assert client.get("/users/1").get_data() == b"ok"
    agent_tracer.flush(10)
    traces = test_agent.wait_for_traces(2)
    requests = sorted((s["resource"], s["parent_id"], s["error"]) for s in spans_named(
        traces, "demo.request"))
    # The dropped body ended its request (not in error); the next request is a trace of its own.
    assert requests == [("GET", 0, 0), ("GET /users/<id>", 0, 0)]  # /stream is unrouted


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


# -- bodies made by the server's wsgi.file_wrapper: handed back as is, for sendfile() --------

def file_app(environ, start_response):
    """Serves the file at ?<path> through the server's file wrapper, with the status in
    X-Status (default 200)."""
    start_response(environ.get("HTTP_X_STATUS", "200 OK"), [("Content-Type", "text/plain")])
    environ["demo.wrapper"] = environ["wsgi.file_wrapper"](open(environ["QUERY_STRING"], "rb"),
                                                           8192)
    return environ["demo.wrapper"]


@pytest.fixture
def served_file(tmp_path):
    path = tmp_path / "served.bin"
    path.write_bytes(bytes(range(256)) * 100)  # several 8 KiB blocks
    return path


def file_wrappers():
    """wsgiref's and Werkzeug's file wrappers (close set on the instance, on the class), and
    gunicorn's when installed."""
    import wsgiref.util

    from werkzeug.wsgi import FileWrapper
    wrappers = [wsgiref.util.FileWrapper, FileWrapper]
    try:
        from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper
    except ImportError:
        return wrappers
    return [*wrappers, GunicornFileWrapper]


def call_file_app(file_wrapper, path, status="200 OK"):
    environ = werkzeug_test.EnvironBuilder(query_string=str(path),
                                           headers={"X-Status": status}).get_environ()
    environ["wsgi.file_wrapper"] = file_wrapper
    statuses = []
    body = WSGITraceMiddleware(file_app, DEMO)(environ, lambda s, h, *e: statuses.append(s))
    return environ, body, statuses


@pytest.mark.parametrize("file_wrapper", file_wrappers(), ids=lambda w: w.__module__)
@pytest.mark.parametrize("status,error", [("200 OK", 0), ("503 SERVICE UNAVAILABLE", 1)])
def test_file_wrapper_is_returned_as_is(agent_tracer, test_agent, served_file, file_wrapper,
                                        status, error):
    close_before = vars(file_wrapper(open(served_file, "rb"))).get("close")
    environ, body, statuses = call_file_app(file_wrapper, served_file, status)
    assert body is environ["demo.wrapper"]
    assert isinstance(body, file_wrapper)
    assert statuses == [status]
    assert b"".join(body) == served_file.read_bytes()
    agent_tracer.flush(10)
    assert test_agent.traces() == []  # the server has not closed it yet
    body.close()
    body.close()  # a second close ends nothing more
    assert body.filelike.closed if hasattr(body, "filelike") else body.file.closed
    # close is put back as it was: the file's own (wsgiref, gunicorn) or the class's (Werkzeug)
    assert ("close" in vars(body)) == (close_before is not None)
    trace, span = one_request_span(test_agent, agent_tracer)
    assert len(trace) == 1
    assert span["meta"]["http.status_code"] == status[:3]
    assert span["error"] == error
    assert agent_tracer.current_span() is None


class SlottedFileWrapper:
    __slots__ = ("filelike",)

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike

    def __iter__(self):
        return iter(lambda: self.filelike.read(8192), b"")

    def close(self):
        self.filelike.close()


def test_file_wrapper_refusing_the_hook_is_traced_body(agent_tracer, test_agent, served_file):
    environ, body, _ = call_file_app(SlottedFileWrapper, served_file)
    assert type(body).__name__ == "TracedBody"  # correct, only slower to serve
    assert b"".join(body) == served_file.read_bytes()
    body.close()
    assert environ["demo.wrapper"].filelike.closed
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["meta"]["http.status_code"] == "200"


def test_wsgiref_server_sends_the_file_wrapper_as_a_file(agent_tracer, test_agent, served_file,
                                                         monkeypatch):
    import threading
    import urllib.request
    from wsgiref import simple_server

    sent_as_file = []

    def sendfile(handler):  # wsgiref's hook for platform file sending: called only for
        sent_as_file.append(handler.result)  # a result that is its file wrapper
        return False  # then wsgiref writes the blocks itself

    monkeypatch.setattr(simple_server.ServerHandler, "sendfile", sendfile)

    class QuietHandler(simple_server.WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = simple_server.make_server("127.0.0.1", 0, WSGITraceMiddleware(file_app, DEMO),
                                       handler_class=QuietHandler)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/file?{served_file}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert response.read() == served_file.read_bytes()
        thread.join(10)
    finally:
        server.server_close()
    assert len(sent_as_file) == 1
    _, span = one_request_span(test_agent, agent_tracer)
    assert span["meta"]["http.status_code"] == "200"
    assert span["meta"]["http.url"].endswith("/file")
