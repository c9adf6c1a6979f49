"""Configuration read from the environment into one typed object.

Variables (the accepted form is in each warning):

- ``DD_TRACE_AGENT_URL``: ``http://host:port``, ``https://host:port`` or ``unix:///path``. Wins
  over the next four.
- ``DD_AGENT_HOST`` (or the legacy ``DD_TRACE_AGENT_HOSTNAME``, which wins) and
  ``DD_TRACE_AGENT_PORT`` (or ``DD_AGENT_PORT``): give ``http://<host>:<port>``.
  Without any of these, ``unix:///var/run/datadog/apm.socket`` if that file exists, else
  ``http://localhost:8126``.
- ``DD_TRACE_AGENT_TIMEOUT_SECONDS``: agent connect/read timeout, default 2.0.
- ``DD_SERVICE``: the default service; else a name derived from the program (script or module).
- ``DD_ENV``, ``DD_VERSION``: the ``env`` and ``version`` tags.
- ``DD_TAGS``: tags on every span, ``key:value,key2:value2``.
- ``DD_TRACE_ENABLED``: ``true``/``false``; false drops every trace (spans are still created).
- ``DD_TRACE_SAMPLE_RATE``: a number in [0, 1]; a client-side rate rule instead of the agent's
  rates.
- ``DD_TRACE_DEBUG``: ``true`` logs ddagent's debug messages and every trace written.
- ``DD_TRACE_PARTIAL_FLUSH_MIN_SPANS``: hand a trace's finished spans to the writer once this
  many are waiting, before the local root finishes (default 300).
- ``DD_TRACE_SQL_NORMALIZE``: ``true`` (default) replaces the literals in SQL resources by ``?``
  before they leave the process (``ddagent/sql.py``); ``false`` sends query text as executed.
- ``DD_TRACE_SHUTDOWN_TIMEOUT``: the most seconds the process may spend at exit sending the
  traces still buffered (default 3.0); exit is never delayed longer, even with the agent down.
- ``DD_TRACE_WRITER_INTERVAL_SECONDS``: how often the writer sends what it buffered (default
  1.0); it sends earlier once its buffer is half full.

A malformed value logs one warning naming the variable and the accepted form, then the default
is used. ``Config.sources`` records where each value came from, for diagnostics.
"""

from __future__ import annotations

import math
import os
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Callable, Optional, TypeVar

from ddagent._logging import get_logger

log = get_logger("ddagent.config")

DEFAULT_AGENT_URL = "http://localhost:8126"
DEFAULT_AGENT_PORT = 8126
AGENT_SOCKET = "/var/run/datadog/apm.socket"

T = TypeVar("T")


class Config:
    """The tracer's settings. Build it with :meth:`from_env`; the attributes are plain values."""

    agent_url: str
    agent_timeout: float
    service: str
    env: Optional[str]
    version: Optional[str]
    tags: dict[str, str]
    enabled: bool
    sample_rate: Optional[float]
    debug: bool
    partial_flush_min_spans: int
    sql_normalize: bool
    shutdown_timeout: float
    writer_interval: float
    sources: dict[str, str]
    """For each attribute above: ``"env DD_X"``, ``"default"`` or how it was derived."""

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Config:
        env = _Reader(os.environ if environ is None else environ)
        self = cls()
        self.sources = env.sources
        self.agent_url = _agent_url(env)
        self.agent_timeout = env.read(
            "agent_timeout", "DD_TRACE_AGENT_TIMEOUT_SECONDS", _positive_float, 2.0,
            "a positive number of seconds, e.g. 2.0")
        self.service = env.read("service", "DD_SERVICE", _non_empty, None, "a service name")
        if self.service is None:
            self.service = program_name()
            env.sources["service"] = "derived from the program name"
        self.env = env.read("env", "DD_ENV", _non_empty, None, "an environment name")
        self.version = env.read("version", "DD_VERSION", _non_empty, None, "a version string")
        self.tags = env.read("tags", "DD_TAGS", _tags, {}, "key:value,key2:value2")
        self.enabled = env.read("enabled", "DD_TRACE_ENABLED", _bool, True, "true or false")
        self.sample_rate = env.read(
            "sample_rate", "DD_TRACE_SAMPLE_RATE", _rate, None, "a number between 0 and 1")
        self.debug = env.read("debug", "DD_TRACE_DEBUG", _bool, False, "true or false")
        self.partial_flush_min_spans = env.read(
            "partial_flush_min_spans", "DD_TRACE_PARTIAL_FLUSH_MIN_SPANS", _positive_int, 300,
            "a positive integer")
        self.sql_normalize = env.read(
            "sql_normalize", "DD_TRACE_SQL_NORMALIZE", _bool, True, "true or false")
        self.shutdown_timeout = env.read(
            "shutdown_timeout", "DD_TRACE_SHUTDOWN_TIMEOUT", _positive_float, 3.0,
            "a positive number of seconds, e.g. 3.0")
        self.writer_interval = env.read(
            "writer_interval", "DD_TRACE_WRITER_INTERVAL_SECONDS", _positive_float, 1.0,
            "a positive number of seconds, e.g. 1.0")
        return self

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.sources)
        return f"Config({fields})"


class _Reader:
    """Reads variables, warning once per malformed one and recording each value's source."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.sources: dict[str, str] = {}

    def raw(self, name: str) -> Optional[str]:
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def read(self, field: str, name: str, parse: Callable[[str], T], default: T,
             accepted: str) -> T:
        raw = self.raw(name)
        if raw is not None:
            try:
                value = parse(raw.strip())
            except ValueError:
                self.warn(name, raw, accepted)
            else:
                self.sources[field] = f"env {name}"
                return value
        self.sources[field] = "default"
        return default

    @staticmethod
    def warn(name: str, raw: str, accepted: str) -> None:
        log.warning("ddagent: ignoring %s=%r: expected %s; using the default", name, raw, accepted)


def _agent_url(env: _Reader) -> str:
    url = env.raw("DD_TRACE_AGENT_URL")
    if url is not None:
        try:
            env.sources["agent_url"] = "env DD_TRACE_AGENT_URL"
            return _valid_url(url.strip())
        except ValueError:
            env.warn("DD_TRACE_AGENT_URL", url, "http://host:port, https://host:port or "
                     "unix:///path/to/socket")
    host_var = "DD_TRACE_AGENT_HOSTNAME" if env.raw("DD_TRACE_AGENT_HOSTNAME") else "DD_AGENT_HOST"
    port_var = "DD_TRACE_AGENT_PORT" if env.raw("DD_TRACE_AGENT_PORT") else "DD_AGENT_PORT"
    host, port_text = env.raw(host_var), env.raw(port_var)
    if host is not None or port_text is not None:
        port = DEFAULT_AGENT_PORT
        if port_text is not None:
            try:
                port = _port(port_text)
            except ValueError:
                env.warn(port_var, port_text, "a port number between 1 and 65535")
        env.sources["agent_url"] = "env " + ", ".join(
            var for var, value in ((host_var, host), (port_var, port_text)) if value is not None)
        return http_url(host or "localhost", port)
    if os.path.exists(AGENT_SOCKET):
        env.sources["agent_url"] = f"{AGENT_SOCKET} exists"
        return "unix://" + AGENT_SOCKET
    env.sources["agent_url"] = "default"
    return DEFAULT_AGENT_URL


def http_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _valid_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        return url
    if parts.scheme == "unix" and parts.path:
        return url
    raise ValueError(url)


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(text)
    return port


def _non_empty(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


def parse_bool(text: str) -> Optional[bool]:
    """True/False for the words every ddagent switch accepts (true/false, 1/0, yes/no, on/off,
    any case, surrounding blanks ignored); None for anything else."""
    return _BOOL_WORDS.get(text.strip().lower())


def parse_switches(items: Iterable[str], separator: str) -> tuple[dict[str, bool], list[str]]:
    """``({name: on}, malformed)`` from items like ``redis:false`` (``separator`` ``":"``).

    The shared grammar of ``DD_PATCH_MODULES`` and the probes control file; each caller splits
    its own text into items and words its own warning for the malformed ones."""
    switches: dict[str, bool] = {}
    malformed: list[str] = []
    for item in items:
        name, sep, value = item.partition(separator)
        on = parse_bool(value)
        if not sep or on is None or not name.strip():
            malformed.append(item)
        else:
            switches[name.strip()] = on
    return switches, malformed


def env_bool(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """The switch ``$name``: None when unset or empty; garbage gets one warning and None."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return None
    value = parse_bool(raw)
    if value is None:
        _Reader.warn(name, raw, "true or false")
    return value


def _bool(text: str) -> bool:
    value = parse_bool(text)
    if value is None:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(text)
    return value


def _tags(text: str) -> dict[str, str]:
    # Datadog also accepts spaces as separators; a malformed item rejects the whole variable so
    # the single warning tells the whole story.
    tags = {}
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep or not key or not value:
            raise ValueError(item)
        tags[key] = value
    return tags


def program_name() -> str:
    """A service name for this program: the script's name, the ``-m`` package, else "python"."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-m", "-"):
        return "python"
    path = os.path.abspath(argv0)
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "__main__":  # python -m package
        name = os.path.basename(os.path.dirname(path))
    return name or "python"
