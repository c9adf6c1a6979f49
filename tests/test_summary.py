"""The local view of traces (ddagent/summary.py): the summary at exit and the spans file.

The aggregation is tested in process with a real Tracer; when the summary shows is tested by
running the README's first command in real interpreters, with stderr a pseudo-terminal or a pipe,
and the test agent up or down.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys

import pytest

from ddagent import summary
from ddagent.config import Config
from ddagent.tracer import Tracer
from tests.listwriter import ListWriter
from tests.testagent import REPO

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port
HEADLINE = re.compile(r"^ddagent: \d+ traces?, \d+ spans?, \d+ errors?", re.MULTILINE)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def fresh_install(monkeypatch):
    """Each test installs its own view (in a program, only the first install acts)."""
    monkeypatch.setattr(summary, "_installed", False)


@pytest.fixture
def tracer() -> Tracer:
    t = Tracer(Config.from_env({"DD_SERVICE": "shop"}))
    t.writer = ListWriter()
    return t


def test_counts_traces_spans_errors_and_resources(tracer):
    view = summary.install(True, tracer=tracer, stream=io.StringIO())
    for _ in range(3):
        with tracer.trace("web.request", resource="GET /items"):
            with tracer.trace("sqlite.query", service="sqlite", resource="SELECT 1"):
                pass
    with pytest.raises(ValueError):
        with tracer.trace("web.request", resource="GET /fail"):
            raise ValueError("no such item")

    counted = view.summary
    assert (counted.traces, counted.spans, counted.errors) == (4, 7, 1)
    assert counted.resources[("shop", "web.request", "GET /items")][0] == 3
    assert counted.resources[("sqlite", "sqlite.query", "SELECT 1")][0] == 3
    text = counted.render()
    assert text.splitlines()[0] == "ddagent: 4 traces, 7 spans, 1 error"
    assert "GET /items" in text and "SELECT 1" in text
    assert "error: builtins.ValueError: no such item (in web.request GET /fail)" in text
    assert len(tracer.writer.chunks) == 4  # the writer still gets every chunk


def test_memory_is_bounded_by_distinct_resources():
    counted = summary.TraceSummary(max_resources=5)
    tracer = Tracer(Config.from_env({}))
    tracer.writer = ListWriter()
    tracer.chunk_observers.append(counted.observe)
    for i in range(50):
        with tracer.trace("q", resource=f"SELECT {i}"):
            pass
    assert len(counted.resources) == 6  # five keys and the shared "other" row
    assert counted.resources[summary._OTHER][0] == 45
    assert "(other resources)" in counted.render()
    assert "... and" in counted.render(top=2)


def test_error_examples_are_capped(tracer):
    view = summary.install(True, tracer=tracer, stream=io.StringIO())
    for i in range(10):
        span = tracer.trace("job", resource=f"job {i}")
        span.error = 1
        span.finish()
    assert view.summary.errors == 10
    assert len(view.summary.error_examples) == summary.MAX_ERROR_EXAMPLES


def test_spans_file_gets_every_span_as_a_json_line(tracer, tmp_path):
    path = tmp_path / "spans.jsonl"
    view = summary.install(False, str(path), tracer=tracer)
    with tracer.trace("parent", resource="p") as parent:
        parent.set_tag("k", "v")
        with tracer.trace("child"):
            pass
    view.spans_file.close()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["child", "parent"]
    assert spans[1]["meta"]["k"] == "v" and spans[0]["parent_id"] == spans[1]["span_id"]
    assert view.summary is None  # summary=False: only the file


@pytest.mark.parametrize(
    "argument, env, stream, installed",
    [
        (None, None, io.StringIO(), False),  # production: no terminal, nothing asked
        (None, None, Terminal(), True),  # a terminal: shown if the agent is not reached
        (None, "false", Terminal(), False),
        (None, "true", io.StringIO(), True),
        (False, "true", Terminal(), False),  # the command line wins over the environment
    ],
)
def test_when_the_summary_is_installed(monkeypatch, tracer, argument, env, stream, installed):
    monkeypatch.delenv("DD_TRACE_SPANS_FILE", raising=False)
    if env is None:
        monkeypatch.delenv("DD_TRACE_SUMMARY", raising=False)
    else:
        monkeypatch.setenv("DD_TRACE_SUMMARY", env)
    view = summary.install(argument, tracer=tracer, stream=stream)
    assert (view is not None) == installed
    assert bool(tracer.chunk_observers) == installed


def test_a_malformed_variable_warns_once_and_uses_the_default(monkeypatch, tracer, caplog):
    monkeypatch.setenv("DD_TRACE_SUMMARY", "sometimes")
    with caplog.at_level(logging.WARNING, logger="ddagent.summary"):
        view = summary.install(tracer=tracer, stream=io.StringIO())
    assert view is None
    assert [r.getMessage() for r in caplog.records] == [
        "ddagent: ignoring DD_TRACE_SUMMARY='sometimes': expected true or false; using the "
        "default"]


def test_an_unwritable_spans_file_warns_and_the_program_goes_on(tracer, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ddagent.summary"):
        view = summary.install(False, str(tmp_path / "missing" / "spans.jsonl"), tracer=tracer)
    assert view is None
    assert "expected a writable file path" in caplog.text
    with tracer.trace("still.traced"):
        pass
    assert tracer.writer.chunks


# -- the README's first command, in real interpreters --------------------------------------------

def launch(*args: str, terminal: bool, **env: str) -> tuple[int, str, str]:
    """Run ``python -m ddagent <args>`` from the repository; return (status, stdout, stderr).

    With ``terminal`` stderr is a pseudo-terminal (read back as text), as in a developer's shell.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    environ.update({"PYTHONPATH": str(REPO), "DD_TRACE_AGENT_URL": UNREACHABLE, **env})
    command = [sys.executable, "-m", "ddagent", *args]
    if not terminal:
        done = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True,
                              timeout=120)
        return done.returncode, done.stdout, done.stderr
    controller, terminal_fd = pty.openpty()
    try:
        proc = subprocess.Popen(command, cwd=REPO, env=environ, stdout=subprocess.PIPE,
                                stderr=terminal_fd, stdin=subprocess.DEVNULL)
    finally:
        os.close(terminal_fd)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal's last descriptor
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    status = proc.wait(60)
    return status, stdout, b"".join(chunks).decode().replace("\r\n", "\n")


def test_readme_command_in_a_terminal_without_agent_shows_the_summary():
    status, stdout, stderr = launch("examples/thumbnails.py", terminal=True)
    assert status == 0, stderr
    assert stdout == "saved 5 batches of thumbnails\n"
    assert HEADLINE.search(stderr) and "0 errors" in stderr
    assert "__main__.save_thumbnails" in stderr and "thumbnails.save" in stderr
    assert "sqlite.query" in stderr and "INSERT INTO thumbnails VALUES (?, ?)" in stderr
    assert f"the agent at {UNREACHABLE} was not reached" in stderr


def test_without_a_terminal_nothing_is_printed_unless_asked():
    status, stdout, stderr = launch("examples/thumbnails.py", terminal=False)
    assert status == 0 and not HEADLINE.search(stderr) and "thumbnails.save" not in stderr
    status, stdout, stderr = launch("--summary", "examples/thumbnails.py", terminal=False)
    assert status == 0 and "thumbnails.save" in stderr
    status, stdout, stderr = launch("examples/thumbnails.py", terminal=False,
                                    DD_TRACE_SUMMARY="true")
    assert status == 0 and "thumbnails.save" in stderr


def test_with_the_agent_up_a_terminal_gets_no_summary_unless_asked(test_agent):
    status, stdout, stderr = launch("examples/thumbnails.py", terminal=True,
                                    DD_TRACE_AGENT_URL=test_agent.url)
    assert status == 0 and not HEADLINE.search(stderr), stderr
    test_agent.wait_for_traces(5)

    status, stdout, stderr = launch("--summary", "examples/thumbnails.py", terminal=True,
                                    DD_TRACE_AGENT_URL=test_agent.url)
    assert status == 0 and "thumbnails.save" in stderr
    assert f"spans to the agent at {test_agent.url}" in stderr
    assert "was not reached" not in stderr


def test_spans_file_from_the_command_line(tmp_path):
    path = tmp_path / "spans.jsonl"
    status, stdout, stderr = launch("--spans-file", str(path), "examples/thumbnails.py",
                                    terminal=False)
    assert status == 0, stderr
    names = {json.loads(line)["name"] for line in path.read_text().splitlines()}
    assert {"__main__.save_thumbnails", "thumbnails.save"} <= names
    assert not HEADLINE.search(stderr)  # the file alone prints no summary


def test_a_forked_child_counts_only_its_own_spans(tracer):
    view = summary.install(True, tracer=tracer, stream=io.StringIO())
    with tracer.trace("before.fork"):
        pass
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its count and leave without running the parent's atexit
        with tracer.trace("in.child"):
            pass
        os.write(write_end, f"{view.summary.spans} {sorted(view.summary.resources)}".encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    assert child == "1 [('shop', 'in.child', 'in.child')]"
    assert view.summary.spans == 1
    assert ("shop", "before.fork", "before.fork") in view.summary.resources


def test_import_auto_honours_the_variables_but_not_the_terminal(tmp_path):
    """``import ddagent.auto`` writes the spans file when asked, and prints a summary only when
    DD_TRACE_SUMMARY says so (a terminal alone is not enough: every child would print one)."""
    spans = tmp_path / "spans.jsonl"
    program = ("import ddagent.auto\nfrom ddagent import tracer\n"
               "with tracer.trace('auto.op'):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DD_TRACE_AGENT_URL": "http://127.0.0.1:9",
           "DD_TRACE_SPANS_FILE": str(spans), "DD_TRACE_SHUTDOWN_TIMEOUT": "0.5"}
    env.pop("DD_TRACE_SUMMARY", None)
    quiet = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                           text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert [json.loads(line)["name"] for line in spans.read_text().splitlines()] == ["auto.op"]
    assert "auto.op" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", program], env={**env, "DD_TRACE_SUMMARY": "true"},
                          capture_output=True, text=True, timeout=60)
    assert loud.returncode == 0 and "auto.op" in loud.stderr, loud.stderr
