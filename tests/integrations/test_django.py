"""Django: the test client and gunicorn (under ``python -m ddagent``) against the test agent,
with sqlite and the machine's PostgreSQL."""

from __future__ import annotations

import os
import tempfile
import urllib.request

import pytest

django = pytest.importorskip("django")
pytest.importorskip("psycopg2")

# Settings are process-wide: one sqlite file, shared with the gunicorn child.
SQLITE_PATH = os.path.join(tempfile.mkdtemp(prefix="ddagent-django-"), "db.sqlite3")
os.environ.setdefault("DJANGO_SQLITE_PATH", SQLITE_PATH)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_app.settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import Client  # noqa: E402

from ddagent import probes  # noqa: E402
from tests.integrations.conftest import enabled, spans_named  # noqa: E402
from tests.integrations.servers import under_launcher  # noqa: E402
from tests.testagent import python_env  # noqa: E402

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware.__call__",
    "django.middleware.common.CommonMiddleware.__call__",
    "django.contrib.auth.middleware.AuthenticationMiddleware.__call__",
    "tests.apps.django_app.views.timing_middleware.<locals>.middleware",
]


@pytest.fixture(scope="module")
def user():
    call_command("migrate", verbosity=0)
    return User.objects.get_or_create(username="ann", defaults={"is_active": True})[0]


@pytest.fixture
def django_probes(user):
    for alias in connections:  # a connection made under another test's probes: make it anew
        connections[alias].close()
    yield from enabled("django")


def client(user=None) -> Client:
    result = Client(raise_request_exception=False, HTTP_USER_AGENT="test-ua")
    if user is not None:
        result.force_login(user)
    return result


def by_id(trace: list[dict]) -> dict[int, dict]:
    return {s["span_id"]: s for s in trace}


def root_of(trace: list[dict]) -> dict:
    [root] = [s for s in trace if s["parent_id"] == 0]
    return root


@pytest.fixture
def logged_in(user):
    """A client with a session for ``user``, made before the probes (login runs queries)."""
    return client(user)


def test_request_with_user_and_postgres(logged_in, user, django_probes, agent_tracer,
                                        test_agent):
    response = logged_in.get("/users/7/")
    assert response.status_code == 200
    assert response.json() == {"pk": 7, "user": "ann", "authenticated": True}
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root, spans = root_of(trace), by_id(trace)
    assert root["name"] == "django.request"
    assert root["service"] == "django"
    assert root["resource"] == "GET users/<int:pk>/"
    assert root["type"] == "web"
    assert root["error"] == 0
    assert root["meta"].items() >= {
        "component": "django", "span.kind": "server", "http.method": "GET",
        "http.url": "http://testserver/users/7/", "http.route": "users/<int:pk>/",
        "http.status_code": "200", "http.useragent": "test-ua",
        "django.view": "tests.apps.django_app.views.user_detail",
        "django.request.class": "django.core.handlers.wsgi.WSGIRequest",
        "django.response.class": "django.http.response.JsonResponse",
        "django.user.is_authenticated": "True", "django.user.id": str(user.pk),
        "usr.id": str(user.pk), "django.user.name": "ann",
    }.items()

    middleware = sorted(spans_named([trace], "django.middleware"), key=lambda s: s["start"])
    assert [s["resource"] for s in middleware] == MIDDLEWARE
    parent = root
    for span in middleware:  # each middleware calls the next one
        assert span["parent_id"] == parent["span_id"]
        assert span["service"] == "django"
        parent = span
    [view] = spans_named([trace], "django.view")
    assert view["parent_id"] == middleware[-1]["span_id"]
    assert view["resource"] == "tests.apps.django_app.views.user_detail"

    [query] = spans_named([trace], "postgres.query")
    assert spans[query["parent_id"]] is view
    assert query["service"] == "postgresdb"
    assert query["resource"] == "select %s"
    assert query["type"] == "sql"
    assert query["meta"].items() >= {
        "component": "django", "span.kind": "client", "db.system": "postgresql",
        "django.db.vendor": "postgresql", "django.db.alias": "postgres",
        "out.host": "127.0.0.1", "db.name": "test", "db.user": "postgres"}.items()
    assert query["metrics"]["network.destination.port"] == 5432
    # The session's user was loaded from sqlite by the authentication middleware.
    [user_query] = spans_named([trace], "sqlite.query")
    assert user_query["service"] == "defaultdb"
    assert "auth_user" in user_query["resource"]
    test_agent.assert_no_check_failures()


def test_template_cache_and_sqlite(django_probes, agent_tracer, test_agent):
    response = client().get("/")
    assert response.content == b"<p>hello</p>\n"
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    root = root_of(trace)
    assert root["resource"] == "GET tests.apps.django_app.views.index"  # path(""): no route
    [view] = spans_named([trace], "django.view")
    cache_spans = spans_named([trace], "django.cache")
    assert [s["resource"] for s in cache_spans] == [
        "django.core.cache.backends.locmem.set app", "django.core.cache.backends.locmem.get app"]
    for span in cache_spans:
        assert span["parent_id"] == view["span_id"]
        assert span["type"] == "cache"
        assert span["meta"]["django.cache.backend"] == \
            "django.core.cache.backends.locmem.LocMemCache"
        assert span["meta"]["django.cache.key"] == "greeting"
    assert cache_spans[1]["metrics"]["db.row_count"] == 1
    [template] = spans_named([trace], "django.template.render")
    assert template["resource"] == "index.html"
    assert template["type"] == "template"
    assert template["meta"]["django.template.engine.class"] == "django.template.engine.Engine"
    [query] = spans_named([trace], "sqlite.query")
    assert query["resource"] == "select ?"
    assert query["meta"]["db.system"] == "sqlite"
    assert query["parent_id"] == view["span_id"]


def test_404_500_and_streamed_response(django_probes, agent_tracer, test_agent):
    http = client()
    assert http.get("/missing/").status_code == 404
    assert http.get("/boom/").status_code == 500
    response = http.get("/stream/")
    assert b"".join(response.streaming_content) == b"first,second"
    response.close()
    agent_tracer.flush(10)

    traces = test_agent.wait_for_traces(3)
    roots = {root_of(t)["meta"]["http.url"]: (root_of(t), t) for t in traces}
    missing, _ = roots["http://testserver/missing/"]
    assert (missing["resource"], missing["error"], missing["meta"]["http.status_code"]) == \
        ("GET 404", 0, "404")

    boom, boom_trace = roots["http://testserver/boom/"]
    assert (boom["resource"], boom["error"], boom["meta"]["http.status_code"]) == \
        ("GET boom/", 1, "500")
    assert boom["meta"]["error.type"] == "builtins.ValueError"
    assert boom["meta"]["error.message"] == "the view failed"
    assert "views.py" in boom["meta"]["error.stack"]
    [view] = spans_named([boom_trace], "django.view")
    assert view["error"] == 1

    stream, stream_trace = roots["http://testserver/stream/"]
    assert stream["meta"]["django.response.class"] == \
        "django.http.response.StreamingHttpResponse"
    [query] = spans_named([stream_trace], "sqlite.query")  # run while the body streamed
    assert query["parent_id"] == stream["span_id"]
    assert query["start"] + query["duration"] <= stream["start"] + stream["duration"]


def test_driver_integration_traces_the_cursor_once(django_probes, agent_tracer, test_agent):
    probes.enable("sqlite3")
    try:
        connections["default"].close()  # the next connection comes from the traced connect()
        assert client().get("/").status_code == 200
    finally:
        probes.disable("sqlite3")
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    queries = spans_named([trace], "sqlite.query")  # with the connection's set-up statements
    assert {q["service"] for q in queries} == {"sqlite"}  # none made by Django
    [query] = [q for q in queries if q["resource"] == "select ?"]
    assert query["meta"]["component"] == "sqlite"
    assert query["meta"]["django.db.alias"] == "default"
    assert query["meta"]["django.db.vendor"] == "sqlite"


def test_psycopg_integration_traces_the_cursor_once(django_probes, agent_tracer, test_agent):
    pytest.importorskip("ddagent.hooks.psycopg")
    probes.enable("psycopg")
    try:
        connections["postgres"].close()
        assert client().get("/users/3/").status_code == 200
    finally:
        probes.disable("psycopg")
        connections["postgres"].close()
    agent_tracer.flush(10)

    [trace] = test_agent.wait_for_traces(1)
    queries = [s for s in trace if s["name"] == "postgres.query" and s["resource"] == "select %s"]
    [query] = queries
    assert query["service"] == "postgres"
    assert query["meta"]["component"] == "psycopg"
    assert query["meta"]["django.db.alias"] == "postgres"


def test_disabled_integration_traces_nothing(user, agent_tracer, list_writer):
    probes.disable("django")
    assert client().get("/users/1/").status_code == 200
    assert list_writer.spans == []


@pytest.fixture
def gunicorn(test_agent, user):
    """The test app under ``python -m ddagent -m gunicorn``, with the seed's settings-based
    setup on top (INSTALLED_APPS + TraceMiddleware + DATADOG_TRACE): still one trace each."""
    env = python_env(test_agent, DJANGO_SQLITE_PATH=SQLITE_PATH, DJANGO_SEED_SETUP="1",
                     DJANGO_SETTINGS_MODULE="tests.apps.django_app.settings")
    with under_launcher(["gunicorn", "-w", "1", "-b", "127.0.0.1:{port}",
                         "tests.apps.django_app.wsgi:application"], env, "/class/") as url:
        yield url


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_gunicorn_under_the_launcher(gunicorn, test_agent):
    test_agent.wait_for_traces(1)  # the start-up probe
    test_agent.start_session()
    parent = {"x-datadog-trace-id": "1234567", "x-datadog-parent-id": "7654321",
              "x-datadog-sampling-priority": "1"}
    assert get(gunicorn + "/users/5/", parent) == (200, b'{"pk": 5, "user": "AnonymousUser", '
                                                        b'"authenticated": false}')
    assert get(gunicorn + "/nothing-here/")[0] == 404
    assert get(gunicorn + "/boom/")[0] == 500
    assert get(gunicorn + "/stream/") == (200, b"first,second")

    traces = test_agent.wait_for_traces(4, timeout=20)
    assert len(traces) == 4
    roots = {}
    for trace in traces:
        assert len(spans_named([trace], "django.request")) == 1  # never traced twice
        root = next(s for s in trace if s["name"] == "django.request")
        roots[root["meta"]["http.url"].rsplit("/", 2)[-2]] = (root, trace)
    host = gunicorn.split("//")[1]

    user_root, user_trace = roots["5"]
    assert user_root["trace_id"] == 1234567
    assert user_root["parent_id"] == 7654321
    assert user_root["service"] == "seed-django"  # DATADOG_TRACE's DEFAULT_SERVICE
    assert user_root["resource"] == "GET users/<int:pk>/"
    assert user_root["meta"]["http.url"] == f"http://{host}/users/5/"
    assert user_root["meta"]["django.user.is_authenticated"] == "False"
    assert "usr.id" not in user_root["meta"]
    # One span for the view's query: the psycopg integration's (the launcher enables it) with
    # Django's tags, or Django's own when psycopg is not traced.
    [query] = [s for s in spans_named([user_trace], "postgres.query")
               if s["resource"] == "select %s"]
    assert query["meta"]["django.db.alias"] == "postgres"
    assert by_id(user_trace)[query["parent_id"]]["name"] == "django.view"

    missing, _ = roots["nothing-here"]
    assert (missing["resource"], missing["error"]) == ("GET 404", 0)
    boom, _ = roots["boom"]
    assert (boom["error"], boom["meta"]["http.status_code"]) == (1, "500")
    assert boom["meta"]["error.type"] == "builtins.ValueError"
    stream, stream_trace = roots["stream"]
    [query] = [s for s in spans_named([stream_trace], "sqlite.query")
               if s["resource"] == "select ?"]  # the launcher's sqlite3 integration, tagged
    assert query["meta"]["django.db.alias"] == "default"
    assert query["parent_id"] == stream["span_id"]
    assert query["start"] + query["duration"] <= stream["start"] + stream["duration"]
