"""``python -m ddagent doctor`` (or ``--info``): what ddagent would do here, and why.

The report lists the effective configuration and where each value came from, the agent's URL and
whether it answers (with its version and endpoints from ``GET /info``), and every integration
with its library's installed version, whether ddagent supports it, and whether it is enabled and
instrumented.

Called inside a program (``from ddagent import doctor; print(doctor.report())``) it also shows
that process's own picture: the libraries imported before instrumentation started, and the
counters (spans created, sent, dropped by reason, probe errors).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import urllib.parse
from typing import Any, Optional

from ddagent.version import __version__

AGENT_TIMEOUT = 1.0  # seconds: the doctor answers quickly even when the agent does not


def report(in_process: bool = True) -> str:
    """The doctor's report as text. ``in_process``: include this process's import order and
    counters (False for the command line, where they would describe the doctor itself)."""
    lines = [f"ddagent {__version__} on Python {sys.version.split()[0]} ({sys.executable}), "
             f"pid {os.getpid()}"]
    for section in (_configuration, _integrations):
        lines.append("")
        lines.extend(_guarded(section))
    if in_process:
        for section in (_imported_before, _counters):
            lines.append("")
            lines.extend(_guarded(section))
    else:
        lines.append("\nRun inside your program for its import order and counters:\n"
                     "  from ddagent import doctor; print(doctor.report())")
    return "\n".join(lines)


def _guarded(section: Any) -> list[str]:
    # One broken part must not hide the rest of the diagnosis.
    try:
        return list(section())
    except Exception as exc:
        return [f"{section.__name__.strip('_').replace('_', ' ').capitalize()}: unavailable "
                f"({exc!r})"]


def _configuration() -> list[str]:
    from ddagent.config import Config

    config = Config.from_env()
    lines = ["Configuration:"]
    for field, source in config.sources.items():
        lines.append(f"  {field} = {getattr(config, field)!r}  ({source})")
    read = {name.strip() for source in config.sources.values() if source.startswith("env ")
            for name in source[4:].split(",")}
    others = sorted(name for name in os.environ if name.startswith("DD_") and name not in read)
    if others:
        lines.append("  other DD_* variables set (read by integrations, the launcher's local "
                     "view, or unknown):")
        lines.extend(f"    {name}={os.environ[name]!r}" for name in others)
    lines.extend(_native_lines())
    tracer_url = _live_tracer_url()
    agent_url = tracer_url or config.agent_url
    lines.append("")
    lines.extend(agent_lines(agent_url))
    if tracer_url and tracer_url != config.agent_url:
        lines.append(f"  (the tracer was configured in code; the environment says "
                     f"{config.agent_url})")
    return lines


def _native_lines() -> list[str]:
    """Whether the native span core and trace encoder run, and if not, why."""
    from ddagent import span
    from ddagent.writer import encoding

    return [
        _native_line("Span core", span.SpanCore is not span.PythonSpanCore,
                     "DD_TRACE_NATIVE_SPAN", "ddagent/_span.c"),
        _native_line("Trace encoder", encoding.encode_trace is not encoding.encode_trace_python,
                     "DD_TRACE_NATIVE_ENCODER", "ddagent/writer/_encoder.c"),
    ]


def _native_line(part: str, native: bool, variable: str, source: str) -> str:
    from ddagent.config import env_bool

    if native:
        return f"{part}: native ({source})"
    if env_bool(variable) is False:
        return f"{part}: Python ({variable}=false)"
    return (f"{part}: Python ({source} is not built for this Python; reinstall ddagent where a "
            "C compiler is available)")


def _live_tracer_url() -> Optional[str]:
    tracer_module = sys.modules.get("ddagent.tracer")
    return getattr(getattr(tracer_module, "tracer", None), "agent_url", None)


def agent_lines(url: str) -> list[str]:
    """``Agent: <url> answers ...`` / ``does not answer (...)``, then what ``/info`` says."""
    try:
        info = agent_info(url)
    except Exception as exc:
        return [f"Agent: {url} does not answer ({exc}); traces will be dropped, counted "
                "(spans.dropped.agent_unreachable)"]
    version = info.get("version")
    lines = [f"Agent: {url} answers" + (f" (agent version {version})" if version else "")]
    endpoints = info.get("endpoints")
    if isinstance(endpoints, list):
        lines.append(f"  endpoints: {', '.join(map(str, endpoints))}")
        if endpoints and "/v0.4/traces" not in endpoints:
            lines.append("  warning: no /v0.4/traces endpoint; the writer falls back to /v0.3")
    return lines


def agent_info(url: str, timeout: float = AGENT_TIMEOUT) -> dict[str, Any]:
    """``GET <url>/info`` as a dict; raises OSError (or ValueError) when it cannot be had."""
    parts = urllib.parse.urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "unix":
        connection = _UnixConnection(parts.path, timeout)
    elif parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                 timeout=timeout)
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        raise ValueError(f"unsupported agent URL {url!r}")
    prefix = "" if parts.scheme == "unix" else parts.path.rstrip("/")
    try:
        connection.request("GET", prefix + "/info")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"GET /info answered HTTP {response.status}")
    info = json.loads(body or b"{}")
    return info if isinstance(info, dict) else {}


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the agent's unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def _integrations() -> list[str]:
    from ddagent.hooks.registry import status

    lines = ["Integrations:",
             f"  {'name':<14}{'library':<32}{'support':<13}{'enabled':<9}{'instrumented':<14}"
             "errors"]
    for item in status():
        if item.get("installed"):
            library = f"{item.get('module')} {item.get('version') or ''}".strip()
        else:
            library = f"{item.get('module')} (not installed)"
        support = "supported" if item.get("implemented") else "no hook yet"
        lines.append(
            f"  {item.get('name', '?'):<14}{library:<32}{support:<13}"
            f"{_yes(item.get('enabled')):<9}{_yes(item.get('instrumented')):<14}"
            f"{item.get('errors', 0)}")
    lines.append("  (a library is instrumented once the program imports it; errors are probe "
                 "errors, after which the integration turns itself off)")
    return lines


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def imported_before_instrumentation() -> list[str]:
    """The supported libraries this process imported before ddagent started instrumenting.

    ``sys.modules`` keeps insertion order, so whatever precedes the first of ``ddagent.auto``
    and the integration modules was imported earlier. Rewritten functions are traced anyway;
    C callables wrapped in place are not traced through references taken before that moment.
    """
    from ddagent.hooks.registry import KNOWN_INTEGRATIONS

    markers = {"ddagent.auto"} | {hook for hook, _ in KNOWN_INTEGRATIONS.values() if hook}
    libraries = {lib for _, libs in KNOWN_INTEGRATIONS.values() for lib in libs.split(",")}
    early: list[str] = []
    for name in list(sys.modules):
        if name in markers:
            return early
        if name in libraries:
            early.append(name)
    return []  # nothing instrumented yet: "before" has no meaning


def _imported_before() -> list[str]:
    early = imported_before_instrumentation()
    if not early:
        return ["Imported before instrumentation started: none of the supported libraries"]
    return [f"Imported before instrumentation started: {', '.join(early)}",
            "  their Python functions are still traced (their code is rewritten in place); "
            "import ddagent.auto (or use python -m ddagent) first to be sure every call is"]


def _counters() -> list[str]:
    from ddagent.stats import STATS

    counts = STATS.snapshot()
    if not counts:
        return ["Counters: none yet (no span was created)"]
    lines = ["Counters:"]
    lines.extend(f"  {name} = {value}" for name, value in counts.items())
    dropped = sum(v for k, v in counts.items() if k.startswith("spans.dropped."))
    if dropped:
        lines.append(f"  {dropped} spans dropped in all (see spans.dropped.<reason> above)")
    return lines
