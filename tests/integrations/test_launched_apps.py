"""Whole programs, untouched, traced by ``python -m ddagent app.py`` or ``import ddagent.auto``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.integrations.conftest import spans_named
from tests.testagent import python_env

APP = textwrap.dedent('''
    import sqlite3
    import redis
    from ddagent import tracer

    with tracer.trace("app.main", service="demo-app"):
        client = redis.Redis(host="127.0.0.1")
        client.set("ddagent:app", "1")
        pipe = client.pipeline()
        pipe.get("ddagent:app").incr("ddagent:app").execute()
        conn = sqlite3.connect(":memory:")
        conn.execute("create table t (a)")
        conn.cursor().executemany("insert into t values (?)", [(1,), (2,)])
    print("done")
''')

# Takes references while nothing is instrumented yet, then starts the agent.
EARLY_REFERENCES = textwrap.dedent('''
    import redis
    from redis import Redis
    stored = Redis.execute_command
    client = Redis(host="127.0.0.1")
    bound = client.get

    import ddagent.auto  # noqa: E402
    import sqlite3
    from ddagent import tracer

    with tracer.trace("app.main", service="demo-app"):
        stored(client, "SET", "ddagent:early", "1")
        bound("ddagent:early")
        sqlite3.connect(":memory:").execute("select 1")
    print("done")
''')


def run(args: list[str], test_agent, cwd) -> None:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=python_env(test_agent),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def check_app_trace(test_agent) -> None:
    [trace] = test_agent.wait_for_traces(1)
    [root] = spans_named([trace], "app.main")
    redis_spans = spans_named([trace], "redis.command")
    sqlite_spans = spans_named([trace], "sqlite.query")
    assert [s["resource"] for s in redis_spans] == ["SET", "GET\nINCRBY"]
    assert [s["resource"] for s in sqlite_spans] == ["create table t (a)",
                                                    "insert into t values (?)"]
    for span in redis_spans + sqlite_spans:
        assert span["parent_id"] == root["span_id"]
    assert {s["service"] for s in redis_spans} == {"redis"}
    assert {s["service"] for s in sqlite_spans} == {"sqlite"}
    test_agent.assert_no_check_failures()


def test_python_m_ddagent_app(tmp_path, test_agent, redis_url):
    (tmp_path / "app.py").write_text(APP)
    run(["-m", "ddagent", "app.py"], test_agent, tmp_path)
    check_app_trace(test_agent)


def test_import_ddagent_auto(tmp_path, test_agent, redis_url):
    (tmp_path / "app.py").write_text("import ddagent.auto  # noqa: F401\n" + APP)
    run(["app.py"], test_agent, tmp_path)
    check_app_trace(test_agent)


def test_references_taken_before_the_agent_started(tmp_path, test_agent, redis_url):
    (tmp_path / "app.py").write_text(EARLY_REFERENCES)
    run(["app.py"], test_agent, tmp_path)
    [trace] = test_agent.wait_for_traces(1)
    assert [s["resource"] for s in spans_named([trace], "redis.command")] == ["SET", "GET"]
    assert [s["resource"] for s in spans_named([trace], "sqlite.query")] == ["select ?"]
