"""AgentWriter: a bounded buffer of encoded traces and a background thread that sends it.

The app thread only encodes its trace and appends the bytes under a short lock. A daemon worker,
started on the first write, sends the buffer about once per ``flush_interval`` (earlier once the
buffer is half full), split into payloads of at most ``max_payload_bytes``, retrying connection
errors, 429 and 5xx a few times within a time budget. Whatever cannot be buffered or delivered is
dropped and counted in STATS as ``spans.dropped.<reason>``.

Sending happens under ``_send_lock``, held by whoever sends (the worker, ``flush`` or ``stop``),
so payloads go out one at a time and in order over the one keep-alive connection.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ddagent._logging import RateLimitedLog
from ddagent.stats import STATS
from ddagent.writer.encoding import (
    MAX_ARRAY_HEADER_SIZE,
    EncodingError,
    encode_trace,
    join_traces,
    repair_trace,
)
from ddagent.writer.transport import AgentTransport, parse_rate_by_service

log = logging.getLogger("ddagent.writer")

MiB = 1024 * 1024

_MAX_ATTEMPTS = 3
_FIRST_BACKOFF = 0.1  # seconds; doubled after every failed attempt
_RETRIED_STATUSES = frozenset((408, 429))  # besides every 5xx


class _Batch:
    """Encoded traces taken out of the buffer together, with their span counts."""

    __slots__ = ("traces", "span_counts", "unsettled", "abandoned")

    def __init__(self) -> None:
        self.traces: list[bytes] = []
        self.span_counts: list[int] = []
        self.unsettled = 0  # spans being sent and not yet counted as sent or dropped
        self.abandoned = False  # stop() counted the unsettled spans as dropped at shutdown


class _Failure(Exception):
    """A payload was not delivered; ``reason`` names the drop counter."""

    def __init__(self, reason: str, detail: str, status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status  # the agent's HTTP status, if it answered


class AgentWriter:
    """Buffers trace chunks and sends them to the agent at ``agent_url`` from a background thread.

    ``write`` never blocks on the network and never raises. ``flush`` and ``stop`` send from the
    calling thread within their timeout. ``on_rate_by_service`` receives the agent's sampling
    rates after every delivered payload whose answer carries them (called from the sending thread).
    A malformed ``agent_url`` raises ValueError here, at construction.
    """

    def __init__(
        self,
        agent_url: str,
        *,
        timeout: float = 2.0,
        flush_interval: float = 1.0,
        max_buffer_bytes: int = 8 * MiB,
        max_buffer_traces: int = 20_000,
        max_payload_bytes: int = 4 * MiB,
        on_rate_by_service: Optional[Callable[[dict[str, float]], None]] = None,
    ) -> None:
        self.agent_url = agent_url
        self.timeout = timeout
        self.flush_interval = flush_interval
        self.max_buffer_bytes = max_buffer_bytes
        self.max_buffer_traces = max_buffer_traces
        self.max_payload_bytes = max_payload_bytes
        self.on_rate_by_service = on_rate_by_service
        # A background flush gives up on its payloads after this long (all retries included).
        self.send_budget = max(10.0, 5 * timeout)
        self._transport = AgentTransport(agent_url, timeout)
        self._log = RateLimitedLog(log)
        self._lock = threading.Lock()  # guards the buffer; held only for appends and swaps
        self._buffer = _Batch()
        self._buffer_bytes = 0
        self._reset_threading_state()
        _LIVE_WRITERS.add(self)

    def _reset_threading_state(self) -> None:
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped = False  # _stopping.is_set(), as a plain bool for write(): no call per trace
        self._worker: Optional[threading.Thread] = None
        self._fork_dropped_spans = 0
        self._in_flight: Optional[_Batch] = None  # the batch _send_buffer is sending

    # -- the app thread's side ------------------------------------------------------------------

    def write(self, spans: Sequence[Any]) -> None:
        """Buffer one trace chunk for sending. Never blocks on the network, never raises."""
        # One method (no inner _write call) and each length computed once: this runs for every
        # trace on the application's thread.
        try:
            span_count = len(spans)
            if not span_count:
                return
            if self._fork_dropped_spans:
                self._count_fork_drops()
            if self._stopped:
                STATS.incr("spans.dropped.shutdown", span_count)
                return
            try:
                encoded = encode_trace(spans)
            except Exception as e:
                STATS.incr("spans.dropped.encoding", span_count)
                self._log.log(logging.WARNING, "encoding",
                              "dropping a trace that cannot be encoded: %s", e)
                return
            size = len(encoded)
            if size + MAX_ARRAY_HEADER_SIZE > self.max_payload_bytes:
                STATS.incr("spans.dropped.payload_too_large", span_count)
                self._log.log(logging.WARNING, "too_large",
                              "dropping a trace of %d bytes: the payload limit is %d bytes",
                              size, self.max_payload_bytes)
                return
            lock = self._lock  # acquire()/release(): `with` costs ~1k instructions more
            lock.acquire()
            try:
                buffer = self._buffer
                buffered = self._buffer_bytes + size
                traces = len(buffer.traces) + 1
                fits = buffered <= self.max_buffer_bytes and traces <= self.max_buffer_traces
                if fits:
                    buffer.traces.append(encoded)
                    buffer.span_counts.append(span_count)
                    self._buffer_bytes = buffered
                    half_full = (buffered * 2 > self.max_buffer_bytes
                                 or traces * 2 > self.max_buffer_traces)
                worker = self._worker
            finally:
                lock.release()
            if not fits:
                STATS.incr("spans.dropped.buffer_full", span_count)
                self._log.log(logging.WARNING, "buffer_full",
                              "trace buffer full (%d traces, %d bytes): dropping a trace of %d "
                              "bytes", self.max_buffer_traces, self.max_buffer_bytes, size)
                return
            if worker is None:
                self._start_worker()
            if half_full and not self._wake.is_set():
                self._wake.set()
        except Exception:
            STATS.incr("writer.errors")
            self._log.log(logging.ERROR, "write", "ddagent writer failed to buffer a trace",
                          exc_info=True)

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is not None:
                return
            # The thread holds only a weak reference, so a forgotten writer can be collected.
            worker = threading.Thread(
                target=_run_worker, args=(weakref.ref(self), self._wake, self._stopping),
                name="ddagent-writer", daemon=True,
            )
            worker.start()  # may fail at interpreter shutdown; the next write tries again
            self._worker = worker

    @property
    def buffered_bytes(self) -> int:
        """Bytes of encoded traces waiting in the buffer (never above ``max_buffer_bytes``)."""
        return self._buffer_bytes

    @property
    def buffered_traces(self) -> int:
        return len(self._buffer.traces)

    # -- sending --------------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send what is buffered now, from this thread; True if all of it was delivered.

        Waits for a send in progress first. ``timeout=None`` means the writer's ``send_budget``.
        """
        return self._flush(timeout, interrupt=None)

    def _flush(self, timeout: Optional[float], interrupt: Optional[threading.Event]) -> bool:
        try:
            if self._fork_dropped_spans:
                self._count_fork_drops()
            return self._send_buffer(self._deadline(timeout), interrupt)
        except Exception:
            STATS.incr("writer.errors")
            self._log.log(logging.ERROR, "flush", "ddagent writer flush failed", exc_info=True)
            return False

    def stop(self, timeout: Optional[float] = None) -> None:
        """Flush what is buffered within ``timeout`` seconds, then stop the worker.

        Never takes (much) longer than ``timeout``, even with the agent down or stalling: what is
        still unsent at the deadline is counted as ``spans.dropped.shutdown``. Later writes are
        dropped and counted the same way.
        """
        deadline = self._deadline(timeout)
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        try:
            self._flush(max(deadline - time.monotonic(), 0.0), interrupt=None)
            worker = self._worker
            if worker is not None and worker is not threading.current_thread():
                worker.join(max(deadline - time.monotonic(), 0.0))
            # Whatever is left (a send we could not wait for kept the lock) is lost at exit.
            unsent = self._take_buffer()
            with self._lock:  # and so is the batch that send holds, unless it ends first
                in_flight = self._in_flight
                if in_flight is not None and not in_flight.abandoned:
                    in_flight.abandoned = True
                    unsent.span_counts.append(in_flight.unsettled)
            if unsent.span_counts:
                STATS.incr("spans.dropped.shutdown", sum(unsent.span_counts))
            self._transport.close()
        except Exception:
            STATS.incr("writer.errors")
            self._log.log(logging.ERROR, "stop", "ddagent writer stop failed", exc_info=True)

    def _deadline(self, timeout: Optional[float]) -> float:
        return time.monotonic() + (self.send_budget if timeout is None else max(timeout, 0.0))

    def _take_buffer(self) -> _Batch:
        with self._lock:
            batch, self._buffer = self._buffer, _Batch()
            self._buffer_bytes = 0
        return batch

    def _send_buffer(self, deadline: float, interrupt: Optional[threading.Event]) -> bool:
        """Take the buffer and send it as one or more payloads. True if everything was delivered.

        Setting ``interrupt`` cuts retries short (the worker's, so that ``stop`` gets the lock).
        """
        if not self._send_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return False
        try:
            batch = self._take_buffer()
            batch.unsettled = sum(batch.span_counts)
            self._in_flight = batch
            delivered = True
            for start, end in self._payload_bounds(batch.traces):
                outcomes = self._deliver(
                    batch.traces[start:end], batch.span_counts[start:end], deadline, interrupt)
                if not self._settle(batch, sum(batch.span_counts[start:end])):
                    return False
                for reason, traces, spans in outcomes:
                    if reason is None:
                        STATS.incr("payloads.sent")
                        STATS.incr("traces.sent", traces)
                        STATS.incr("spans.sent", spans)
                    else:
                        # A trace dropped for its own bad values is not a delivery failure.
                        if reason != "encoding":
                            delivered = False
                            STATS.incr("payloads.errors")
                        STATS.incr(f"spans.dropped.{reason}", spans)
            return delivered
        finally:
            self._in_flight = None
            self._send_lock.release()

    def _deliver(
        self, traces: list[bytes], span_counts: list[int], deadline: float,
        interrupt: Optional[threading.Event],
    ) -> list[tuple[Optional[str], int, int]]:
        """Send ``traces`` as one payload; what became of them as (drop reason or None for sent,
        traces, spans).

        A 400 may come from one span whose types the agent refuses (encoding is optimistic, see
        ddagent/writer/encoding.py): the traces are then repaired and sent once more, without
        the ones that cannot be repaired, so one bad span costs only its own trace."""
        spans = sum(span_counts)
        try:
            self._send_payload(join_traces(traces), len(traces), deadline, interrupt)
            return [(None, len(traces), spans)]
        except _Failure as failure:
            # Its traceback holds _send_payload's frame, whose locals hold the failure and the
            # body: a cycle that would keep megabytes alive until a full GC.
            failure.__traceback__ = None
            if failure.status != 400:
                return [(failure.reason, len(traces), spans)]
            first_failure = failure
        repaired, repaired_spans, problems = [], 0, []
        for encoded, count in zip(traces, span_counts):
            try:
                repaired.append(repair_trace(encoded))
                repaired_spans += count
            except EncodingError as e:
                problems.append(str(e))
        if repaired == traces:  # the 400 was about something else
            return [(first_failure.reason, len(traces), spans)]
        outcomes: list[tuple[Optional[str], int, int]] = []
        if problems:
            self._log.log(logging.WARNING, "encoding",
                          "dropping %d trace(s) the agent refused: %s", len(problems),
                          "; ".join(sorted(set(problems))[:3]))
            outcomes.append(("encoding", len(problems), spans - repaired_spans))
        if repaired:
            try:
                self._send_payload(join_traces(repaired), len(repaired), deadline, interrupt)
                outcomes.append((None, len(repaired), repaired_spans))
            except _Failure as failure:
                failure.__traceback__ = None
                outcomes.append((failure.reason, len(repaired), repaired_spans))
        return outcomes

    def _settle(self, batch: _Batch, spans: int) -> bool:
        """Claim the right to count ``spans`` of ``batch``; False once stop() counted them all."""
        with self._lock:
            if batch.abandoned:
                return False
            batch.unsettled -= spans
            return True

    def _payload_bounds(self, traces: list[bytes]) -> list[tuple[int, int]]:
        """Split ``traces`` into consecutive runs whose payload fits ``max_payload_bytes`` (a
        trace too large alone still makes a run of one)."""
        # Cumulative sizes and a binary search per payload: C speed, where a Python loop over
        # every trace cost ~0.1 us a trace of the writer's CPU.
        ends = list(itertools.accumulate(map(len, traces)))
        room = self.max_payload_bytes - MAX_ARRAY_HEADER_SIZE
        bounds = []
        start, sent = 0, 0
        while start < len(traces):
            end = max(bisect.bisect_right(ends, sent + room, start), start + 1)
            bounds.append((start, end))
            start, sent = end, ends[end - 1]
        return bounds

    def _send_payload(
        self, body: bytes, trace_count: int, deadline: float,
        interrupt: Optional[threading.Event],
    ) -> None:
        """Deliver one payload, retrying what may pass later; raise _Failure when giving up."""
        backoff = _FIRST_BACKOFF
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failure("agent_unreachable", "no time left to send")
            try:
                response = self._transport.send_traces(body, trace_count, remaining)
            except Exception as e:  # urllib3 and socket errors, or anything odd on the wire
                failure = _Failure("agent_unreachable", f"{type(e).__name__}: {e}")
                self._log.log(logging.WARNING, "unreachable",
                              "trace agent at %s is unreachable (%s); traces are dropped",
                              self.agent_url, failure)
            else:
                if 200 <= response.status < 300:
                    self._update_rates(response.body)
                    return
                failure = self._status_failure(response.status, response.body)
                if response.status < 500 and response.status not in _RETRIED_STATUSES:
                    raise failure
            if attempt == _MAX_ATTEMPTS:
                raise failure
            pause = min(backoff, max(deadline - time.monotonic(), 0.0))
            if interrupt is None:
                time.sleep(pause)
            elif interrupt.wait(pause):
                raise failure
            backoff *= 2
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _status_failure(self, status: int, body: bytes) -> _Failure:
        reason = "payload_too_large" if status == 413 else "agent_error"
        detail = body[:300].decode("utf-8", "replace")
        self._log.log(logging.WARNING, f"status_{status}",
                      "trace agent at %s%s answered %d: %s",
                      self.agent_url, self._transport.endpoint, status, detail)
        return _Failure(reason, f"HTTP {status}", status)

    def _update_rates(self, body: bytes) -> None:
        if self.on_rate_by_service is None:
            return
        rates = parse_rate_by_service(body)
        if rates is None:
            return
        try:
            self.on_rate_by_service(rates)
        except Exception:
            STATS.incr("writer.errors")
            self._log.log(logging.ERROR, "rates", "on_rate_by_service callback failed",
                          exc_info=True)

    # -- fork -----------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._lock.acquire()  # so the child sees a consistent buffer

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        # The parent keeps (and sends) its buffer; the child starts empty, with a fresh
        # connection and no worker (one starts on the next write).
        discarded = sum(self._buffer.span_counts)
        stopping = self._stopping.is_set()
        self._lock = threading.Lock()
        self._buffer = _Batch()
        self._buffer_bytes = 0
        self._reset_threading_state()
        self._fork_dropped_spans = discarded
        if stopping:
            self._stopped = True
            self._stopping.set()
        self._transport = AgentTransport(self.agent_url, self.timeout, self._transport.endpoint)

    def _count_fork_drops(self) -> None:
        # Counted after the fork rather than in the fork hook: STATS's lock may have been held
        # by another parent thread at fork time.
        dropped, self._fork_dropped_spans = self._fork_dropped_spans, 0
        if dropped:
            STATS.incr("spans.dropped.fork", dropped)


def _run_worker(
    writer_ref: weakref.ref[AgentWriter], wake: threading.Event, stopping: threading.Event
) -> None:
    """The background flush loop; ends when its writer stops or is garbage-collected."""
    while not stopping.is_set():
        writer = writer_ref()
        if writer is None:
            return
        interval = writer.flush_interval
        del writer  # do not keep the writer alive while sleeping
        wake.wait(interval)
        wake.clear()
        writer = writer_ref()
        if writer is None or stopping.is_set():
            return
        writer._flush(writer.send_budget, interrupt=stopping)
        del writer


_LIVE_WRITERS: weakref.WeakSet[AgentWriter] = weakref.WeakSet()


def _for_live_writers(method: str) -> Callable[[], None]:
    def hook() -> None:
        for writer in list(_LIVE_WRITERS):
            getattr(writer, method)()

    return hook


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_for_live_writers("_before_fork"),
        after_in_parent=_for_live_writers("_after_fork_in_parent"),
        after_in_child=_for_live_writers("_after_fork_in_child"),
    )
