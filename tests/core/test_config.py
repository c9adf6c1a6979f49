from __future__ import annotations

import logging
import sys

import pytest

from ddagent import config as config_module
from ddagent.config import Config


def test_defaults() -> None:
    c = Config.from_env({})
    assert c.agent_timeout == 2.0 and c.enabled is True and c.debug is False
    assert c.env is None and c.version is None and c.tags == {} and c.sample_rate is None
    assert c.partial_flush_min_spans == 300 and c.writer_interval == 1.0
    assert c.sources["enabled"] == "default"
    assert c.sources["service"] == "derived from the program name"
    assert c.service == config_module.program_name()


def test_values_and_sources() -> None:
    c = Config.from_env({
        "DD_TRACE_AGENT_URL": "unix:///var/run/datadog/apm.socket", "DD_SERVICE": "web",
        "DD_ENV": "prod", "DD_VERSION": "1.0", "DD_TAGS": "a:1, b:2", "DD_TRACE_ENABLED": "false",
        "DD_TRACE_SAMPLE_RATE": "0.5", "DD_TRACE_DEBUG": "1",
    })
    assert c.agent_url == "unix:///var/run/datadog/apm.socket"
    assert (c.service, c.env, c.version) == ("web", "prod", "1.0")
    assert c.tags == {"a": "1", "b": "2"}
    assert c.enabled is False and c.sample_rate == 0.5 and c.debug is True
    assert c.sources["service"] == "env DD_SERVICE"
    assert c.sources["agent_url"] == "env DD_TRACE_AGENT_URL"
    assert "service='web'" in repr(c)


def test_agent_host_and_port(monkeypatch) -> None:
    assert Config.from_env({"DD_AGENT_HOST": "agent"}).agent_url == "http://agent:8126"
    assert Config.from_env({"DD_TRACE_AGENT_PORT": "9000"}).agent_url == "http://localhost:9000"
    c = Config.from_env({"DD_AGENT_HOST": "::1", "DD_TRACE_AGENT_PORT": "1"})
    assert c.agent_url == "http://[::1]:1"
    assert c.sources["agent_url"] == "env DD_AGENT_HOST, DD_TRACE_AGENT_PORT"
    both = Config.from_env({"DD_TRACE_AGENT_URL": "http://u:1", "DD_AGENT_HOST": "h"})
    assert both.agent_url == "http://u:1"
    legacy = Config.from_env({"DD_TRACE_AGENT_HOSTNAME": "old", "DD_AGENT_HOST": "new"})
    assert legacy.agent_url == "http://old:8126"
    monkeypatch.setattr(config_module, "AGENT_SOCKET", __file__)  # "the socket exists"
    assert Config.from_env({}).agent_url == f"unix://{__file__}"


MALFORMED = [
    ("DD_TRACE_AGENT_URL", "ftp://agent:21", "agent_url", "http://localhost:8126"),
    ("DD_TRACE_AGENT_URL", "http://:80", "agent_url", "http://localhost:8126"),
    ("DD_TRACE_AGENT_URL", "http://agent:port", "agent_url", "http://localhost:8126"),
    ("DD_TRACE_AGENT_PORT", "abc", "agent_url", "http://localhost:8126"),
    ("DD_TRACE_AGENT_PORT", "70000", "agent_url", "http://localhost:8126"),
    ("DD_TRACE_AGENT_TIMEOUT_SECONDS", "-1", "agent_timeout", 2.0),
    ("DD_TRACE_ENABLED", "maybe", "enabled", True),
    ("DD_TRACE_DEBUG", "2", "debug", False),
    ("DD_TRACE_SAMPLE_RATE", "1.5", "sample_rate", None),
    ("DD_TRACE_SAMPLE_RATE", "nan", "sample_rate", None),
    ("DD_TRACE_SAMPLE_RATE", "half", "sample_rate", None),
    ("DD_TAGS", "a:1,broken", "tags", {}),
    ("DD_TRACE_PARTIAL_FLUSH_MIN_SPANS", "0", "partial_flush_min_spans", 300),
    ("DD_TRACE_WRITER_INTERVAL_SECONDS", "often", "writer_interval", 1.0),
    ("DD_TRACE_WRITER_INTERVAL_SECONDS", "0", "writer_interval", 1.0),
]


@pytest.mark.parametrize("name,value,field,default", MALFORMED)
def test_malformed_value_warns_once_and_falls_back(name, value, field, default, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ddagent.config"):
        c = Config.from_env({name: value})
    assert getattr(c, field) == default
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert name in warnings[0].getMessage() and "expected" in warnings[0].getMessage()


def test_malformed_value_in_a_real_process_environment(monkeypatch, caplog) -> None:
    monkeypatch.setenv("DD_TRACE_ENABLED", "nope")
    with caplog.at_level(logging.WARNING, logger="ddagent.config"):
        c = Config.from_env()
    assert c.enabled is True
    assert "DD_TRACE_ENABLED" in caplog.text and "true or false" in caplog.text


@pytest.mark.parametrize("argv0,expected", [
    ("/srv/app/server.py", "server"), ("/usr/bin/gunicorn", "gunicorn"),
    ("/srv/mypkg/__main__.py", "mypkg"), ("-c", "python"), ("", "python"),
])
def test_program_name(argv0, expected, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    assert config_module.program_name() == expected


def test_the_writer_sends_at_the_configured_interval() -> None:
    from ddagent.tracer import Tracer

    tracer = Tracer(Config.from_env({"DD_TRACE_WRITER_INTERVAL_SECONDS": "7.5",
                                     "DD_TRACE_AGENT_URL": "http://127.0.0.1:9"}))
    try:
        assert tracer.writer.flush_interval == 7.5
        assert tracer.config.sources["writer_interval"] == "env DD_TRACE_WRITER_INTERVAL_SECONDS"
    finally:
        tracer.shutdown(timeout=0)
