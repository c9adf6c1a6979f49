"""Django under ASGI: the ASGI application called in-process, ``AsyncClient``, and uvicorn
(under ``python -m ddagent``), against the test agent; plus the shared ASGI layer's own rules
(``hooks/asgi.py``) on a bare ASGI application."""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
import traceback

import pytest

pytest.importorskip("django")
pytest.importorskip("psycopg2")

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from ddagent import probes  # noqa: E402
from ddagent.hooks.asgi import trace_asgi_call  # noqa: E402
from ddagent.hooks.http import request_span, set_route  # noqa: E402
from ddagent.hooks.registry import Integration  # noqa: E402
from ddagent.stats import STATS  # noqa: E402
from tests.integrations.conftest import spans_named  # noqa: E402
from tests.integrations.servers import under_launcher  # noqa: E402
from tests.integrations.test_django import (  # noqa: E402  (sets Django up)
    SQLITE_PATH,
    by_id,
    django_probes,  # noqa: F401  (a fixture)
    get,
    root_of,
    user,  # noqa: F401  (a fixture)
)
from tests.testagent import python_env  # noqa: E402


async def _call(app, scope: dict) -> tuple[list[dict], BaseException | None]:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect: Django cancels this wait itself

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except BaseException as exc:  # noqa: BLE001  (the tests look at what escaped)
        return sent, exc
    return sent, None


def http_scope(path: str, headers: dict | None = None) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"q=1",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"example.com"), (b"user-agent", b"test-ua")]
        + [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }


@pytest.fixture
def app(django_probes):  # noqa: F811
    """The project's ASGI application, built once Django is instrumented: its middleware chain
    holds the view layer's probes from then on (as ``python -m ddagent`` arranges)."""
    return get_asgi_application()


def asgi_get(app, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET ``path`` from the ASGI ``app``, in-process, on a new event loop."""
    sent, exc = asyncio.run(_call(app, http_scope(path, headers)))
    assert exc is None, exc
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def test_sync_view_with_postgres(app, agent_tracer, test_agent):
    assert asgi_get(app, "/users/7/") == (200, b'{"pk": 7, "user": "AnonymousUser", '
                                          b'"authenticated": false}')
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root, spans = root_of(trace), by_id(trace)
    assert (root["name"], root["service"], root["type"], root["error"]) == \
        ("django.request", "django", "web", 0)
    assert root["resource"] == "GET users/<int:pk>/"
    assert root["metrics"]["_dd.measured"] == 1
    assert root["meta"].items() >= {
        "component": "django", "span.kind": "server", "http.method": "GET",
        "http.url": "http://example.com/users/7/", "http.route": "users/<int:pk>/",
        "http.status_code": "200", "http.useragent": "test-ua",
        "django.view": "tests.apps.django_app.views.user_detail",
        "django.request.class": "django.core.handlers.asgi.ASGIRequest",
        "django.response.class": "django.http.response.JsonResponse",
        "django.user.is_authenticated": "False",
    }.items()
    # The sync middleware and view run in sync_to_async's thread, under the request's trace.
    [view] = spans_named([trace], "django.view")
    assert view["resource"] == "tests.apps.django_app.views.user_detail"
    [query] = spans_named([trace], "postgres.query")
    assert spans[query["parent_id"]] is view
    assert query["resource"] == "select %s"
    assert query["meta"]["django.db.alias"] == "postgres"
    parent = view
    while parent["parent_id"]:  # the view descends from the root, through the middleware
        parent = spans[parent["parent_id"]]
    assert parent is root
    test_agent.assert_no_check_failures()


def test_async_view(app, agent_tracer, test_agent):
    assert asgi_get(app, "/async/") == (200, b"async")
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root, spans = root_of(trace), by_id(trace)
    assert root["resource"] == "GET async/"
    assert root["meta"]["django.view"] == "tests.apps.django_app.views.async_view"
    [view] = spans_named([trace], "django.view")
    assert view["resource"] == "tests.apps.django_app.views.async_view"
    [query] = spans_named([trace], "sqlite.query")  # run through sync_to_async
    assert spans[query["parent_id"]] is view
    assert query["resource"] == "select ?"
    assert root["start"] + root["duration"] >= view["start"] + view["duration"]


def test_404_and_500(app, agent_tracer, test_agent):
    assert asgi_get(app, "/missing/")[0] == 404
    assert asgi_get(app, "/boom/")[0] == 500
    assert asgi_get(app, "/async-boom/")[0] == 500
    agent_tracer.flush(10)

    traces = test_agent.wait_for_traces(3)
    roots = {root_of(t)["meta"]["http.url"]: (root_of(t), t) for t in traces}
    missing, _ = roots["http://example.com/missing/"]
    assert (missing["resource"], missing["error"], missing["meta"]["http.status_code"]) == \
        ("GET 404", 0, "404")
    for path, message in (("boom/", "the view failed"), ("async-boom/", "the async view failed")):
        root, trace = roots["http://example.com/" + path]
        assert (root["resource"], root["error"], root["meta"]["http.status_code"]) == \
            ("GET " + path, 1, "500")
        assert root["meta"]["error.type"] == "builtins.ValueError"
        assert root["meta"]["error.message"] == message
        assert "views.py" in root["meta"]["error.stack"]
        [view] = spans_named([trace], "django.view")
        assert view["error"] == 1


def test_propagation_headers_continue_the_trace(app, agent_tracer, test_agent):
    upstream = {"x-datadog-trace-id": "1234567", "x-datadog-parent-id": "7654321",
                "x-datadog-sampling-priority": "2"}
    assert asgi_get(app, "/class/", upstream)[0] == 200
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root = next(s for s in trace if s["name"] == "django.request")
    assert (root["trace_id"], root["parent_id"]) == (1234567, 7654321)
    # The upstream's decision, on the chunk root (the chunk's first span).
    assert trace[0]["metrics"]["_sampling_priority_v1"] == 2
    assert {s["trace_id"] for s in trace} == {1234567}


def test_async_client(app, agent_tracer, test_agent):
    """``AsyncClient`` skips ``ASGIHandler.__call__``: its root comes from get_response_async."""
    response = asyncio.run(AsyncClient(headers={"user-agent": "test-ua"}).get("/async/"))
    assert response.status_code == 200
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root = root_of(trace)
    assert (root["name"], root["resource"]) == ("django.request", "GET async/")
    assert root["meta"]["http.url"] == "http://testserver/async/"
    assert root["meta"]["http.status_code"] == "200"
    assert len(spans_named([trace], "sqlite.query")) == 1


def test_disabled_at_run_time_traces_nothing(app, agent_tracer, list_writer):
    assert asgi_get(app, "/class/")[0] == 200
    assert [s.name for s in list_writer.spans if s.name == "django.request"] == ["django.request"]
    probes.disable("django")
    del list_writer.spans[:]
    assert asgi_get(app, "/users/1/")[0] == 200
    assert asgi_get(app, "/async/")[0] == 200
    assert list_writer.spans == []


def test_lifespan_and_websocket_pass_through(app, list_writer):
    for kind in ("lifespan", "websocket"):
        _, exc = asyncio.run(_call(app, {"type": kind}))
        assert isinstance(exc, ValueError)  # Django's own refusal, unchanged
    assert list_writer.spans == []


# -- middleware run as coroutines ---------------------------------------------------------------

# What ``django-admin startproject`` puts in MIDDLEWARE: all async-capable.
DEFAULT_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEST_MIDDLEWARE = "tests.apps.django_app.middleware."


def get_through(entry: str, middleware: list[str], path: str) -> int:
    """GET ``path`` through ``entry`` (the ASGI application, ``AsyncClient`` or the sync test
    ``Client``) with its middleware chain built from ``middleware``; returns the status."""
    with override_settings(MIDDLEWARE=middleware):
        if entry == "asgi":
            return asgi_get(get_asgi_application(), path)[0]
        if entry == "async_client":
            return asyncio.run(AsyncClient().get(path)).status_code
        return Client().get(path).status_code


def middleware_chain(trace: list[dict]) -> list[dict]:
    """The trace's ``django.middleware`` spans, outermost first, checked to nest as the calls
    do: each a child of the one before (the first of the request root), the view a child of
    the last."""
    middleware = sorted(spans_named([trace], "django.middleware"), key=lambda s: s["start"])
    parent = root_of(trace)
    assert parent["name"] == "django.request"
    for span in middleware:
        assert span["parent_id"] == parent["span_id"]
        assert (span["service"], span["meta"]["component"]) == ("django", "django")
        parent = span
    for view in spans_named([trace], "django.view"):
        assert view["parent_id"] == parent["span_id"]
    return middleware


@pytest.mark.parametrize("entry", ["asgi", "async_client"])
def test_default_middleware_stack(entry, django_probes, agent_tracer, test_agent):  # noqa: F811
    assert get_through(entry, DEFAULT_MIDDLEWARE, "/async/") == 200
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    middleware = middleware_chain(trace)
    assert [s["resource"] for s in middleware] == [f"{m}.__call__" for m in DEFAULT_MIDDLEWARE]
    assert not any(s["error"] for s in middleware)
    [view] = spans_named([trace], "django.view")
    assert view["resource"] == "tests.apps.django_app.views.async_view"
    test_agent.assert_no_check_failures()


def test_traced_async_handlers_stay_coroutine_functions(django_probes):  # noqa: F811
    """Django, asgiref and ``sync_and_async_middleware`` factories look at this to choose
    between awaiting a handler and adapting it."""
    with override_settings(MIDDLEWARE=DEFAULT_MIDDLEWARE):
        chain = get_asgi_application()._middleware_chain
    assert type(chain).__module__ == "ddagent.hooks.django"  # the outermost one, traced
    assert iscoroutinefunction(chain)
    if sys.version_info >= (3, 12):
        assert inspect.iscoroutinefunction(chain)


@pytest.mark.parametrize("entry", ["asgi", "async_client", "sync_client"])
def test_custom_async_middleware(entry, django_probes, agent_tracer, test_agent):  # noqa: F811
    """Function-style (``sync_and_async_middleware`` and async-only) and class-style (marked
    with ``markcoroutinefunction``) async middleware, around and inside a sync one that Django
    adapts with ``sync_to_async``/``async_to_sync``; under the sync Client the chain is sync
    at the top and async further in."""
    chain = ["tests.apps.django_app.views.timing_middleware",
             TEST_MIDDLEWARE + "either_mode_middleware",
             TEST_MIDDLEWARE + "AsyncClassMiddleware",
             TEST_MIDDLEWARE + "async_only_middleware"]
    assert get_through(entry, chain, "/async/") == 200
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    assert [s["resource"] for s in middleware_chain(trace)] == [
        "tests.apps.django_app.views.timing_middleware.<locals>.middleware",
        "tests.apps.django_app.middleware.either_mode_middleware.<locals>.middleware",
        "tests.apps.django_app.middleware.AsyncClassMiddleware.__call__",
        "tests.apps.django_app.middleware.async_only_middleware.<locals>.middleware",
    ]
    [view] = spans_named([trace], "django.view")
    [query] = spans_named([trace], "sqlite.query")
    assert query["parent_id"] == view["span_id"]


def serve_failing(propagate: bool) -> tuple[list[dict], BaseException | None]:
    """GET through the default stack and an async middleware that raises; with
    ``DEBUG_PROPAGATE_EXCEPTIONS`` Django lets the exception out instead of answering 500."""
    with override_settings(MIDDLEWARE=[*DEFAULT_MIDDLEWARE, TEST_MIDDLEWARE + "failing_middleware"],
                           DEBUG_PROPAGATE_EXCEPTIONS=propagate):
        return asyncio.run(_call(get_asgi_application(), http_scope("/async/")))


def outcome(sent: list[dict], exc: BaseException | None) -> tuple:
    """What the server sees: the status sent, or the exception and the line that raised it."""
    if exc is None:
        return sent[0]["status"], None
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return None, (type(exc), str(exc), frame.filename, frame.name, frame.lineno)


@pytest.mark.parametrize("propagate", [False, True], ids=["500", "propagated"])
def test_failing_async_middleware(propagate, django_probes, agent_tracer,  # noqa: F811
                                  test_agent):
    probes.disable("django")
    try:
        untraced = outcome(*serve_failing(propagate))
    finally:
        probes.enable("django")
    assert outcome(*serve_failing(propagate)) == untraced  # as without ddagent
    status, raised = untraced
    if propagate:
        assert raised[:2] == (ValueError, "the middleware failed")
        assert raised[2].endswith("middleware.py")
    else:
        assert status == 500
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root = root_of(trace)
    assert (root["error"], root["meta"]["http.status_code"]) == (1, "500")
    assert (root["meta"]["error.type"], root["meta"]["error.message"]) == \
        ("builtins.ValueError", "the middleware failed")
    middleware = middleware_chain(trace)
    assert [s["resource"] for s in middleware] == [
        *(f"{m}.__call__" for m in DEFAULT_MIDDLEWARE),
        "tests.apps.django_app.middleware.failing_middleware.<locals>.middleware"]
    assert spans_named([trace], "django.view") == []
    for span in middleware:
        if propagate:  # it went out through every middleware
            assert span["error"] == 1
            assert (span["meta"]["error.type"], span["meta"]["error.message"]) == \
                ("builtins.ValueError", "the middleware failed")
            assert "middleware.py" in span["meta"]["error.stack"]
        else:  # the failing middleware's own handler turned it into the 500 response
            assert span["error"] == 0


# -- the shared ASGI layer on a bare application ---------------------------------------------

DEMO = Integration("demo", service="demo", span_kind="server", probes=[])


class Boom(Exception):
    pass


async def bare_app(scope, receive, send):
    set_route(request_span(scope), "/items/<id>")
    if scope["path"] == "/raise":
        raise Boom("app failed")
    status = 503 if scope["path"] == "/fail" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def traced(scope: dict) -> tuple[list[dict], BaseException | None]:
    async def app(scope, receive, send):
        return await trace_asgi_call(DEMO, bare_app, scope, receive, send)

    return asyncio.run(_call(app, scope))


def test_bare_app_statuses_and_exceptions(list_writer):
    assert traced(http_scope("/ok"))[1] is None
    assert traced(http_scope("/fail"))[1] is None
    _, exc = traced(http_scope("/raise"))
    assert isinstance(exc, Boom)  # the application's exception, unchanged
    ok, fail, raised = list_writer.spans
    assert (ok.name, ok.resource, ok.error, ok.meta["http.status_code"]) == \
        ("demo.request", "GET /items/<id>", 0, "200")
    assert ok.meta["http.url"] == "http://example.com/ok"  # no query string
    assert (fail.error, fail.meta["http.status_code"]) == (1, "503")
    assert (raised.error, raised.meta["http.status_code"]) == (1, "500")
    assert raised.meta["error.type"] == f"{__name__}.Boom"


def test_url_without_host_header_and_quoted_path(list_writer):
    scope = http_scope("/caf\u00e9 x")
    scope["headers"] = []
    scope["server"] = ("10.0.0.1", 8080)
    assert traced(scope)[1] is None
    [span] = list_writer.spans
    assert span.meta["http.url"] == "http://10.0.0.1:8080/caf%C3%A9%20x"
    assert "http.useragent" not in span.meta


def test_a_layer_failure_leaves_the_request_untraced(list_writer):
    scope = http_scope("/ok")
    scope["headers"] = [(b"host",)]  # not a (name, value) pair: the layer's reading fails
    before = STATS.snapshot().get("probes.errors.demo", 0)
    sent, exc = traced(scope)
    assert exc is None and sent[0]["status"] == 200  # the application ran as if untraced
    assert list_writer.spans == []
    assert STATS.snapshot().get("probes.errors.demo", 0) == before + 1


# -- a real ASGI server ------------------------------------------------------------------------

@pytest.fixture
def uvicorn(test_agent, user):  # noqa: F811
    """The project's ASGI application under ``python -m ddagent -m uvicorn``."""
    pytest.importorskip("uvicorn")
    env = python_env(test_agent, DJANGO_SQLITE_PATH=SQLITE_PATH,
                     DJANGO_SETTINGS_MODULE="tests.apps.django_app.settings")
    # uvicorn re-raises SIGTERM once it has shut down.
    with under_launcher(["uvicorn", "--host", "127.0.0.1", "--port", "{port}",
                         "--no-access-log", "tests.apps.django_app.asgi:application"],
                        env, "/class/", exit_codes=(0, -signal.SIGTERM)) as url:
        yield url


def test_uvicorn_under_the_launcher(uvicorn, test_agent):
    test_agent.wait_for_traces(1)  # the start-up probe
    test_agent.start_session()
    parent = {"x-datadog-trace-id": "1234567", "x-datadog-parent-id": "7654321",
              "x-datadog-sampling-priority": "1"}
    assert get(uvicorn + "/users/5/", parent)[0] == 200
    assert get(uvicorn + "/async/") == (200, b"async")
    assert get(uvicorn + "/async-boom/")[0] == 500

    traces = test_agent.wait_for_traces(3, timeout=20)
    assert len(traces) == 3
    roots = {}
    for trace in traces:
        [root] = spans_named([trace], "django.request")  # never traced twice
        roots[root["resource"]] = (root, trace)
    host = uvicorn.split("//")[1]

    user_root, user_trace = roots["GET users/<int:pk>/"]
    assert (user_root["trace_id"], user_root["parent_id"]) == (1234567, 7654321)
    assert user_root["meta"]["http.url"] == f"http://{host}/users/5/"
    assert user_root["meta"]["django.request.class"] == "django.core.handlers.asgi.ASGIRequest"
    [query] = [s for s in spans_named([user_trace], "postgres.query")
               if s["resource"] == "select %s"]
    assert by_id(user_trace)[query["parent_id"]]["name"] == "django.view"

    async_root, async_trace = roots["GET async/"]
    assert async_root["meta"]["http.status_code"] == "200"
    [query] = [s for s in spans_named([async_trace], "sqlite.query")
               if s["resource"] == "select ?"]
    assert by_id(async_trace)[query["parent_id"]]["name"] == "django.view"

    boom, _ = roots["GET async-boom/"]
    assert (boom["error"], boom["meta"]["http.status_code"]) == (1, "500")
    assert boom["meta"]["error.type"] == "builtins.ValueError"
