"""ddagent's loggers: fetched lazily, and rate-limited so a tracer in trouble never floods the
application's logs."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import logging

# logging's levels, so that callers need not import it.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class LazyLogger:
    """``logging.getLogger(name)``, looked up on first use.

    Importing ``logging`` costs ~9 ms of start-up (``-X importtime``) and most runs of an
    instrumented program never log anything from ddagent, so modules hold one of these instead.
    A debug or info message while nobody has imported ``logging`` is dropped without importing
    it: no logger can have been given a lower level than the default WARNING yet.
    """

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: Any = None

    def _get(self) -> logging.Logger:
        logger = self._logger
        if logger is None:
            import logging

            logger = self._logger = logging.getLogger(self.name)
        return logger  # type: ignore[no-any-return]

    def __getattr__(self, attribute: str) -> Any:  # warning, error, exception, isEnabledFor...
        return getattr(self._get(), attribute)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._get().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._get().info(msg, *args, **kwargs)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= WARNING or "logging" in sys.modules:
            self._get().log(level, msg, *args, **kwargs)


def get_logger(name: str) -> Any:
    """The logger ``name`` (a :class:`LazyLogger`: ``logging`` is imported when it first logs)."""
    return LazyLogger(name)


class RateLimitedLog:
    """Logs a message for a key at most once per ``interval`` seconds.

    Suppressed occurrences are counted and reported with the next message that gets through
    (``... (12 similar messages suppressed)``).
    """

    def __init__(self, logger: logging.Logger | LazyLogger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object,
            exc_info: Union[bool, BaseException] = False) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within the interval; say whether it was."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def reset(self) -> None:
        with self._lock:
            self._last.clear()
            self._suppressed.clear()
