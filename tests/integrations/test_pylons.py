"""PylonsTraceMiddleware on plain WSGI apps served by wsgiref (Pylons itself needs Python 2).

The inner app stands in for a Pylons stack: like Routes' RoutesMiddleware it puts
``pylons.routes_dict`` into the environ before the controller answers.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from ddagent.hooks.pylons import PylonsTraceMiddleware


class NotFound(Exception):
    code = 404


def routed_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/users/5":
        environ["pylons.routes_dict"] = {"controller": "users", "action": "show", "id": "5"}
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"user ", b"5"])
    if path == "/boom":
        environ["pylons.routes_dict"] = {"controller": "errors", "action": "boom"}
        raise RuntimeError("controller failed")
    if path == "/missing":
        raise NotFound("no such page")
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"down"]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(agent_tracer):
    app = PylonsTraceMiddleware(routed_app, agent_tracer, service="legacy-pylons")
    httpd = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_through_the_middleware(server, agent_tracer, test_agent):
    assert fetch(server + "/users/5", {"x-datadog-trace-id": "99", "x-datadog-parent-id": "98",
                                       "REMOTE-USER": "ignored"}) == 200
    assert fetch(server + "/boom") == 500
    assert fetch(server + "/missing") == 500  # wsgiref answers 500 to any exception
    assert fetch(server + "/down") == 503
    agent_tracer.flush(10)

    roots = {s["meta"]["http.url"].rsplit("/", 1)[-1]: s
             for t in test_agent.wait_for_traces(4) for s in t}
    show = roots["5"]
    assert (show["name"], show["service"], show["type"]) == \
        ("pylons.request", "legacy-pylons", "web")
    assert (show["trace_id"], show["parent_id"]) == (99, 98)
    assert show["resource"] == "users.show"
    assert show["meta"].items() >= {
        "component": "pylons", "span.kind": "server", "http.method": "GET",
        "http.status_code": "200", "pylons.route.controller": "users",
        "pylons.route.action": "show", "pylons.user": ""}.items()
    boom = roots["boom"]
    assert (boom["resource"], boom["error"], boom["meta"]["http.status_code"]) == \
        ("errors.boom", 1, "500")
    assert boom["meta"]["error.type"] == "builtins.RuntimeError"
    missing = roots["missing"]
    assert (missing["meta"]["http.status_code"], missing["error"]) == ("404", 1)
    assert roots["down"]["error"] == 1  # a 5xx status is an error
    assert roots["down"]["resource"] == "GET"
