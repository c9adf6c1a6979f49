"""Operator control: switch integrations on and off in a running process, without code changes.

How to use it:

1. Start the program with ``DD_PROBES_CONTROL_FILE=/path/to/probes.conf``. The file holds one
   ``name=on`` or ``name=off`` per line (also ``true``/``false``, ``1``/``0``, ``yes``/``no``);
   blank lines and ``#`` comments are ignored; integrations not named keep their state::

       # switch redis tracing off, sqlite3 on
       redis=off
       sqlite3=on

2. Edit the file, then send ``SIGUSR2`` to the process (``kill -USR2 <pid>``) to apply it at
   once. Without the signal the change is still picked up: the file's modification time is
   checked every ``DD_PROBES_CONTROL_POLL_SECONDS`` seconds (default 5). The signal is not used
   when the program installed its own SIGUSR2 handler, or when ddagent starts outside the main
   thread; polling still works then.

The file is also applied once when control starts. Bad lines get one warning per reading, naming
the file and the accepted form. The work happens on a background daemon thread (the signal
handler only wakes it), so the application thread never waits on it and a signal arriving while
the program holds ddagent's registry lock cannot deadlock.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

from ddagent._logging import get_logger
from ddagent.config import parse_switches
from ddagent.hooks import registry

log = get_logger(__name__)

CONTROL_FILE_ENV = "DD_PROBES_CONTROL_FILE"
POLL_SECONDS_ENV = "DD_PROBES_CONTROL_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0
_ACCEPTED_FORM = "one 'name=on' or 'name=off' per line, e.g. 'redis=off'"


def parse(text: str, source: str = "control file") -> dict[str, bool]:
    """``{name: on}`` from the file's text; malformed lines are skipped with one warning."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    wanted, malformed = parse_switches(filter(None, lines), "=")
    if malformed:
        log.warning("ddagent: ignoring %s in %s; expected %s",
                    ", ".join(repr(m) for m in malformed), source, _ACCEPTED_FORM)
    return wanted


def apply(wanted: dict[str, bool]) -> None:
    """Enable or disable each named integration; unusable names are logged, not raised."""
    for name, on in wanted.items():
        try:
            if on:
                registry.enable(name)
            else:
                registry.disable(name)
        except registry.PatchError as exc:
            log.warning("ddagent: control file: %s", exc)


class ControlFileWatcher:
    """A daemon thread that applies ``path`` when it changes or when ``wake()`` is called."""

    def __init__(self, path: str, poll_seconds: float) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopped = False
        self._last_seen: Optional[tuple[int, int]] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ddagent-probes-control",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Apply the file now (safe from a signal handler: it only sets an event)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _run(self) -> None:
        forced = True  # apply once at start
        while not self._stopped:
            try:
                self._check(forced)
            except Exception:
                log.warning("ddagent: could not apply %s", self.path, exc_info=True)
            forced = self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _check(self, forced: bool) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        seen = (st.st_mtime_ns, st.st_size)
        if not forced and seen == self._last_seen:
            return
        self._last_seen = seen
        with open(self.path, encoding="utf-8") as f:
            apply(parse(f.read(), self.path))


_watcher: Optional[ControlFileWatcher] = None


def install() -> Optional[ControlFileWatcher]:
    """Start watching ``$DD_PROBES_CONTROL_FILE`` (no-op when unset or already started)."""
    global _watcher
    path = os.environ.get(CONTROL_FILE_ENV)
    if not path or _watcher is not None:
        return _watcher
    _watcher = ControlFileWatcher(path, _poll_seconds())
    _watcher.start()
    _install_signal_handler(_watcher)
    os.register_at_fork(after_in_child=_restart_in_child)
    return _watcher


def _poll_seconds() -> float:
    raw = os.environ.get(POLL_SECONDS_ENV)
    if not raw:
        return DEFAULT_POLL_SECONDS
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    log.warning("ddagent: ignoring %s=%r; expected a positive number of seconds (default %s)",
                POLL_SECONDS_ENV, raw, DEFAULT_POLL_SECONDS)
    return DEFAULT_POLL_SECONDS


def _install_signal_handler(watcher: ControlFileWatcher) -> None:
    sigusr2 = getattr(signal, "SIGUSR2", None)
    if sigusr2 is None:
        return
    try:
        if signal.getsignal(sigusr2) not in (signal.SIG_DFL, None):
            log.info("ddagent: SIGUSR2 is the application's; %s is polled only", watcher.path)
            return
        signal.signal(sigusr2, _on_signal)
    except ValueError:  # not the main thread
        log.info("ddagent: SIGUSR2 handler not installed (not the main thread); %s is polled "
                 "every %ss", watcher.path, watcher.poll_seconds)


def _on_signal(signum: int, frame: object) -> None:
    if _watcher is not None:
        _watcher.wake()


def _restart_in_child() -> None:
    # The watcher thread does not survive fork(); the child gets its own.
    global _watcher
    old, _watcher = _watcher, None
    if old is not None:
        _watcher = ControlFileWatcher(old.path, old.poll_seconds)
        _watcher.start()
