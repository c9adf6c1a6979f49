"""``import ddagent.auto``: instrument this program and the Python processes it starts.

Importing it (first thing in a program, or implicitly through ``python -m ddagent``):

- installs every enabled integration through ``ddagent.hooks.registry.patch_all()``; a missing
  or failing registry is logged and skipped, never raised into the application;
- shows the traces locally when ``DD_TRACE_SUMMARY`` or ``DD_TRACE_SPANS_FILE`` asks for it
  (``ddagent/summary.py``; unlike the launcher, never just because stderr is a terminal);
- starts the operator control file watcher when ``DD_PROBES_CONTROL_FILE`` is set
  (``ddagent/hooks/control.py``: switch integrations off and on in a running process);
- prepends ``ddagent/bootstrap`` to ``PYTHONPATH`` in this process's environment, so that child
  Python processes (``subprocess``, ``multiprocessing`` spawn and forkserver) import the
  bootstrap ``sitecustomize``, which imports this module in them too. Interpreters started with
  ``-E``, ``-I`` or ``-S`` ignore it and run untraced.

A module body runs once per process, so importing it again does nothing.
"""

from __future__ import annotations

import os

from ddagent._logging import get_logger

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")

_log = get_logger(__name__)


def _patch_all() -> None:
    try:
        from ddagent.hooks.registry import patch_all

        patch_all()
    except Exception:
        _log.warning("ddagent: could not install the integrations", exc_info=True)


def _show_traces_locally() -> None:
    if not (os.environ.get("DD_TRACE_SUMMARY") or os.environ.get("DD_TRACE_SPANS_FILE")):
        return  # nothing asked for: leave the summary module (and json) unimported
    try:
        from ddagent import summary

        summary.install(terminal_default=False)
    except Exception:
        _log.warning("ddagent: could not set up the local trace summary", exc_info=True)


def _watch_control_file() -> None:
    try:
        from ddagent.hooks import control

        control.install()
    except Exception:
        _log.warning("ddagent: could not watch the probes control file", exc_info=True)


def _trace_child_processes() -> None:
    current = os.environ.get("PYTHONPATH", "")
    entries = current.split(os.pathsep) if current else []
    if BOOTSTRAP_DIR not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *entries])


_trace_child_processes()
_patch_all()
_show_traces_locally()
_watch_control_file()
