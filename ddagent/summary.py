"""What was traced, shown locally: a summary at exit and, on request, every span as JSON lines.

A newcomer runs ``python -m ddagent app.py`` before any Datadog agent exists; the traces then go
nowhere, so the launcher shows them here instead:

- **The summary** (stderr, at exit): traces, spans, errors, and the top resources by count and
  by total time. It prints when ``--summary`` or ``DD_TRACE_SUMMARY=true`` asks for it; without
  either, only when stderr is a terminal and the agent never accepted a payload. So a working
  setup and production (no terminal) stay quiet; ``DD_TRACE_SUMMARY=false`` silences it always.
- **The spans file** (``--spans-file PATH`` or ``DD_TRACE_SPANS_FILE``): every finished span
  appended to PATH as one JSON object per line, with the agent's field names
  (``Span.to_dict``).

Both watch the chunks the tracer hands to its writer (``Tracer.chunk_observers``); nothing is
installed, and nothing costs anything, when neither can be shown. Memory is bounded: at most
``MAX_RESOURCES`` distinct (service, name, resource) keys are counted, later ones together.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, Optional, TextIO

from ddagent._logging import WARNING, RateLimitedLog, get_logger
from ddagent.config import env_bool
from ddagent.ext import errors
from ddagent.stats import STATS

log = get_logger("ddagent.summary")

MAX_RESOURCES = 1000  # distinct keys counted; later keys share one "other resources" row
TOP = 8  # rows shown for each ordering (by count, by total time)
MAX_ERROR_EXAMPLES = 3

_OTHER = ("", "(other resources)", "")


class TraceSummary:
    """Counts finished spans per (service, name, resource), with their total time and errors."""

    def __init__(self, max_resources: int = MAX_RESOURCES) -> None:
        self.max_resources = max_resources
        self.reset()

    def reset(self) -> None:
        """Start from zero, with a new lock (a forked child reports only its own spans, and the
        parent may have held the lock while forking)."""
        self._lock = threading.Lock()
        self.traces = 0
        self.spans = 0
        self.errors = 0
        # key -> [count, total duration ns, errors]
        self.resources: dict[tuple[str, str, str], list[int]] = {}
        self.error_examples: list[str] = []

    def observe(self, chunk: list[Any]) -> None:
        """Count one trace chunk (called on the thread that finished it)."""
        with self._lock:
            self.spans += len(chunk)
            for span in chunk:
                if getattr(span, "_parent", None) is None:  # the trace's local root
                    self.traces += 1
                key = (span.service or "", span.name or "", span.resource or "")
                row = self.resources.get(key)
                if row is None:
                    if len(self.resources) >= self.max_resources:
                        key = _OTHER
                        row = self.resources.get(key)
                    if row is None:
                        row = self.resources[key] = [0, 0, 0]
                row[0] += 1
                row[1] += span.duration_ns or 0
                if span.error:
                    row[2] += 1
                    self.errors += 1
                    if len(self.error_examples) < MAX_ERROR_EXAMPLES:
                        self.error_examples.append(_describe_error(span))

    def render(self, top: int = TOP) -> str:
        """The summary as text: a headline, a table of the top resources, error examples."""
        with self._lock:
            resources = dict(self.resources)
            traces, spans, errors = self.traces, self.spans, self.errors
            examples = list(self.error_examples)
        lines = [f"ddagent: {_plural(traces, 'trace')}, {_plural(spans, 'span')}, "
                 f"{_plural(errors, 'error')}"]
        if not resources:
            return lines[0] + " (nothing was traced)"
        by_count = sorted(resources, key=lambda k: resources[k][0], reverse=True)[:top]
        by_time = sorted(resources, key=lambda k: resources[k][1], reverse=True)[:top]
        shown = sorted(set(by_count) | set(by_time), key=lambda k: resources[k][1], reverse=True)
        heading = "top resources by count and by total time" if len(resources) > top else \
            "resources"
        lines.append(f"  {heading}:")
        service_width = min(max(len(k[0]) for k in shown), 20)
        name_width = min(max(len(k[1]) for k in shown), 32)
        lines.append(f"  {'count':>7} {'total':>9} {'mean':>9} {'errors':>6}  "
                     f"{'service':<{service_width}}  {'name':<{name_width}}  resource")
        for key in shown:
            count, total_ns, key_errors = resources[key]
            service, name, resource = key
            lines.append(
                f"  {count:>7} {_ms(total_ns):>9} {_ms(total_ns // count):>9} {key_errors:>6}  "
                f"{_shorten(service, 20):<{service_width}}  {_shorten(name, 32):<{name_width}}  "
                f"{'' if resource == name else _shorten(resource, 60)}".rstrip())
        hidden = len(resources) - len(shown)
        if hidden:
            lines.append(f"  ... and {_plural(hidden, 'more resource')}")
        lines.extend(f"  error: {example}" for example in examples)
        return "\n".join(lines)


class SpansFile:
    """Appends every span of a chunk to a file as JSON lines (the agent's field names)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: Optional[TextIO] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._log = RateLimitedLog(log)

    def observe(self, chunk: list[Any]) -> None:
        try:
            import json  # only with a spans file: ~2 ms of start-up otherwise

            text = "".join(json.dumps(span.to_dict(), default=str) + "\n" for span in chunk)
            with self._lock:
                if self._file is not None:
                    self._file.write(text)
                    self._file.flush()  # whole chunks on disk, and nothing buffered at fork
        except Exception as exc:
            STATS.incr("summary.errors")
            self._log.log(WARNING, "spans_file", "ddagent: cannot write spans to %s: %s",
                          self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class LocalView:
    """The summary and spans file of one tracer, and what to do with them at exit."""

    def __init__(self, tracer: Any, summary: Optional[TraceSummary],
                 spans_file: Optional[SpansFile], always_print: bool, stream: TextIO) -> None:
        self.tracer = tracer
        self.summary = summary
        self.spans_file = spans_file
        self.always_print = always_print
        self.stream = stream

    def observe(self, chunk: list[Any]) -> None:
        # Observers run inside the tracer's span-finishing path: never raise from here.
        try:
            if self.summary is not None:
                self.summary.observe(chunk)
            if self.spans_file is not None:
                self.spans_file.observe(chunk)
        except Exception:
            STATS.incr("summary.errors")

    def at_exit(self) -> None:
        try:
            if self.spans_file is not None:
                self.spans_file.close()
            if self.summary is None:
                return
            # atexit runs this before the tracer's own exit flush; flush first (within the
            # same budget, DD_TRACE_SHUTDOWN_TIMEOUT) so that the counters say whether the
            # agent took the traces.
            self.tracer.flush(getattr(self.tracer.config, "shutdown_timeout", 3.0))
            agent_reached = STATS.get("payloads.sent") > 0
            if self.always_print or not agent_reached:
                print(self.render(agent_reached), file=self.stream, flush=True)
        except Exception:  # at exit, with the stream possibly closed: say nothing
            STATS.incr("summary.errors")

    def render(self, agent_reached: bool) -> str:
        text = self.summary.render() if self.summary is not None else ""
        url = getattr(self.tracer, "agent_url", "the agent")
        sent = STATS.get("spans.sent")
        if agent_reached:
            text += f"\n  sent {_plural(sent, 'span')} to the agent at {url}"
        elif self.summary is not None and self.summary.spans:
            text += (f"\n  the agent at {url} was not reached: nothing was sent "
                     "(`python -m ddagent doctor` checks the setup)")
        if self.spans_file is not None:
            text += f"\n  every span is in {self.spans_file.path}"
        return text


_installed = False


def install(
    summary: Optional[bool] = None,
    spans_file: Optional[str] = None,
    *,
    tracer: Any = None,
    stream: Optional[TextIO] = None,
    terminal_default: bool = True,
) -> Optional[LocalView]:
    """Show ``tracer``'s traces locally (never raises; only the first call in a process acts).

    ``summary``: True prints at exit always, False never, None (``DD_TRACE_SUMMARY``, else
    unset) only when ``terminal_default`` and ``stream`` (stderr) is a terminal and the agent
    was not reached. The launcher keeps that default; ``import ddagent.auto`` turns it off, so
    the processes a program starts do not each print a summary.
    ``spans_file``: a path (else ``DD_TRACE_SPANS_FILE``) for every span as JSON lines.
    Returns the installed view, or None when there is nothing to show.
    """
    global _installed
    if _installed:
        return None
    _installed = True
    try:
        return _install(summary, spans_file, tracer, stream or sys.stderr, terminal_default)
    except Exception as exc:
        log.warning("ddagent: the local trace summary is unavailable: %r", exc)
        return None


def _install(summary: Optional[bool], spans_file: Optional[str], tracer: Any,
             stream: TextIO, terminal_default: bool) -> Optional[LocalView]:
    if summary is None:
        summary = env_bool("DD_TRACE_SUMMARY")
    if spans_file is None:
        spans_file = os.environ.get("DD_TRACE_SPANS_FILE") or None
    show_summary = summary is True or (
        summary is None and terminal_default and _is_terminal(stream))
    if not show_summary and spans_file is None:
        return None
    if tracer is None:
        from ddagent.tracer import tracer
    try:
        file = SpansFile(spans_file) if spans_file is not None else None
    except OSError as exc:
        log.warning("ddagent: ignoring DD_TRACE_SPANS_FILE / --spans-file %r: %s; expected a "
                    "writable file path", spans_file, exc)
        file = None
    view = LocalView(tracer, TraceSummary() if show_summary else None, file,
                     always_print=summary is True, stream=stream)
    if view.summary is None and view.spans_file is None:
        return None
    tracer.chunk_observers.append(view.observe)
    atexit.register(view.at_exit)
    if view.summary is not None and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=view.summary.reset)
    return view


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _describe_error(span: Any) -> str:
    meta = span.meta
    what = meta.get(errors.ERROR_TYPE) or "error"
    message = meta.get(errors.ERROR_MSG) or ""
    where = span.resource if span.resource == span.name else f"{span.name} {span.resource}"
    return _shorten(f"{what}: {message} (in {where})" if message else f"{what} (in {where})", 160)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 10_000_000_000 else f"{ns / 1e9:.1f}s"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
