"""AgentWriter: a bounded buffer of encoded traces and a background thread that sends it.

The app thread only encodes its trace and appends the bytes to the buffer, in one call of the
buffer's ``put``. A daemon worker, started on the first write, sends the buffer about once per
``flush_interval`` (earlier once the buffer is half full), split into payloads of at most
``max_payload_bytes``, retrying connection errors, 429 and 5xx a few times within a time budget.
Whatever cannot be buffered or delivered is dropped and counted in STATS as
``spans.dropped.<reason>``.

Sending happens under ``_send_lock``, held by whoever sends (the worker, ``flush`` or ``stop``),
so payloads go out one at a time and in order over the one keep-alive connection.

Where ddagent/writer/_encoder.c is built (and ``DD_TRACE_NATIVE_ENCODER`` is not ``false``, see
encoding.py), ``AgentWriter.write`` and the buffer are its C twins of :data:`python_write` and
:class:`PythonSendBuffer`, which say what they do and are the fallback: ``write`` is then one C
call that encodes the chunk and appends it, and calls back into Python only for an unusual
answer (a drop, the first trace, a buffer over half full). The C buffer keeps the traces' msgpack
back to back in one block, so that buffering a trace allocates no object and a payload is one
copy of a run of the block. Callgrind, a single-span trace of the tracer (2 tags; ~8 meta and ~4
metrics entries) exported to the test agent: ``write`` cost ~10.8k instructions (encoding ~4.9k,
the Python around it ~4.7k, the sending amortized ~1.0k) and costs ~3.3k with the C twins
(encoding ~3.1k, the rest ~0.2k); the Python path costs ~0.3k more than it did (put is a call).
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
    encode_trace_python,
    join_traces,
    native_encoder,
    repair_trace,
)
from ddagent.writer.transport import AgentTransport, parse_rate_by_service

log = logging.getLogger("ddagent.writer")

MiB = 1024 * 1024

_MAX_ATTEMPTS = 3
_FIRST_BACKOFF = 0.1  # seconds; doubled after every failed attempt
_RETRIED_STATUSES = frozenset((408, 429))  # besides every 5xx


# What a buffer's put() returns, besides 0 (buffered, nothing else to do) and -size (a trace of
# `size` bytes that fits no payload or not the buffer, dropped). Bits: WAKE and START may come
# together.
WAKE = 1  # buffered, and the buffer is now over half full: the worker should send it
START = 2  # buffered, and the buffer's needs_worker is set: the worker should be started
CLOSED = 4  # not encoded: the buffer is closed (the writer stopped)


class PythonSendBuffer:
    """The traces the writer buffers, encoded, and the bounds they are held to.

    The Python twin of ``_encoder.SendBuffer`` (ddagent/writer/_encoder.c), which the writer
    uses where it is built: the same methods, the same results. ``put`` encodes a trace chunk
    and appends it in one call, so that the writer's ``write`` has nothing to do in the usual
    case; ``take`` hands the sender everything buffered so far as a :class:`PythonEncodedTraces`.
    Appends and takes hold ``lock`` (the writer's: it is held across fork).
    """

    __slots__ = ("max_bytes", "max_traces", "max_payload_bytes", "closed", "needs_worker",
                 "bytes", "spans", "_encode", "_lock", "_traces", "_span_counts")

    def __init__(
        self, encode: Callable[[Sequence[Any]], bytes], max_bytes: int, max_traces: int,
        max_payload_bytes: int, lock: threading.Lock,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_traces = max_traces
        self.max_payload_bytes = max_payload_bytes
        self.closed = False  # put() buffers nothing more and returns CLOSED
        self.needs_worker = True  # put() adds START to what it returns
        self.bytes = 0  # of the buffered traces
        self.spans = 0  # of the buffered traces
        self._encode = encode
        self._lock = lock
        self._traces: list[bytes] = []
        self._span_counts: list[int] = []

    def __len__(self) -> int:
        return len(self._traces)

    def put(self, spans: Sequence[Any]) -> int:
        """Encode one trace chunk and buffer it if it fits. Returns 0, or WAKE and START bits,
        when buffered; CLOSED (nothing encoded) once closed; -size for an encoded trace of
        ``size`` bytes too large for a payload or for what is left of the buffer. Raises what
        encoding raised."""
        span_count = len(spans)
        if not span_count:
            return 0
        if self.closed:
            return CLOSED
        encoded = self._encode(spans)
        size = len(encoded)
        if size + MAX_ARRAY_HEADER_SIZE > self.max_payload_bytes:
            return -size
        lock = self._lock  # acquire()/release(): `with` costs ~1k instructions more
        lock.acquire()
        try:
            if self.closed:  # since encoding began
                return CLOSED
            buffered = self.bytes + size
            traces = len(self._traces) + 1
            if buffered > self.max_bytes or traces > self.max_traces:
                return -size
            self._traces.append(encoded)
            self._span_counts.append(span_count)
            self.bytes = buffered
            self.spans += span_count
            status = START if self.needs_worker else 0
            if buffered * 2 > self.max_bytes or traces * 2 > self.max_traces:
                status |= WAKE
            return status
        finally:
            lock.release()

    def take(self) -> PythonEncodedTraces:
        """The buffered traces, leaving the buffer empty."""
        with self._lock:
            taken = PythonEncodedTraces(self._traces, self._span_counts, self.spans)
            self._traces, self._span_counts = [], []
            self.bytes = self.spans = 0
        return taken


class PythonEncodedTraces:
    """Encoded traces taken out of a :class:`PythonSendBuffer`, for the sender: the Python twin
    of ``_encoder.EncodedTraces``. Runs of them are given by ``(start, end)``, end excluded."""

    __slots__ = ("_traces", "_span_counts", "spans")

    def __init__(self, traces: list[bytes], span_counts: list[int], spans: int) -> None:
        self._traces = traces
        self._span_counts = span_counts
        self.spans = spans  # of all the traces

    def __len__(self) -> int:
        return len(self._traces)

    def payloads(self, room: int) -> list[tuple[int, int]]:
        """Consecutive runs of the traces, each as long as fits ``room`` bytes (a trace too
        large alone still makes a run of one)."""
        # Cumulative sizes and a binary search per payload: C speed, where a Python loop over
        # every trace cost ~0.1 us a trace of the writer's CPU.
        ends = list(itertools.accumulate(map(len, self._traces)))
        bounds = []
        start, sent = 0, 0
        while start < len(ends):
            end = max(bisect.bisect_right(ends, sent + room, start), start + 1)
            bounds.append((start, end))
            start, sent = end, ends[end - 1]
        return bounds

    def body(self, start: int, end: int) -> bytes:
        """The traces of the run behind their msgpack array header: a request body."""
        return join_traces(self._traces[start:end])

    def span_count(self, start: int, end: int) -> int:
        return sum(self._span_counts[start:end])

    def traces(self, start: int, end: int) -> list[bytes]:
        return self._traces[start:end]

    def span_counts(self, start: int, end: int) -> list[int]:
        return self._span_counts[start:end]


SendBuffer: Any = PythonSendBuffer if native_encoder is None else native_encoder.SendBuffer
"""The writer's buffer: native where encoding.py found the native encoder."""


def _new_buffer(
    max_bytes: int, max_traces: int, max_payload_bytes: int, lock: threading.Lock,
) -> Any:
    if SendBuffer is PythonSendBuffer:
        return PythonSendBuffer(encode_trace, max_bytes, max_traces, max_payload_bytes, lock)
    return SendBuffer(encode_trace_python, max_bytes, max_traces, max_payload_bytes)


class _Batch:
    """Encoded traces taken out of the buffer together, being sent."""

    __slots__ = ("traces", "unsettled", "abandoned")

    def __init__(self, traces: Any) -> None:
        self.traces = traces  # a PythonEncodedTraces or its native twin
        self.unsettled = traces.spans  # spans being sent and not yet counted as sent or dropped
        self.abandoned = False  # stop() counted the unsettled spans as dropped at shutdown


class _Failure(Exception):
    """A payload was not delivered; ``reason`` names the drop counter."""

    def __init__(self, reason: str, detail: str, status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status  # the agent's HTTP status, if it answered


def _buffer_field(name: str) -> Any:
    """A writer property that reads and sets its buffer's ``name``."""
    return property(lambda writer: getattr(writer._buffer, name),
                    lambda writer, value: setattr(writer._buffer, name, value))


class AgentWriter:
    """Buffers trace chunks and sends them to the agent at ``agent_url`` from a background thread.

    ``write`` never blocks on the network and never raises. ``flush`` and ``stop`` send from the
    calling thread within their timeout. ``on_rate_by_service`` receives the agent's sampling
    rates after every delivered payload whose answer carries them (called from the sending thread).
    A malformed ``agent_url`` raises ValueError here, at construction.
    """

    # _buffer is a slot: the C write() reads it straight from the writer (see _encoder.c).
    __slots__ = ("_buffer", "__dict__", "__weakref__")

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
        self.on_rate_by_service = on_rate_by_service
        # A background flush gives up on its payloads after this long (all retries included).
        self.send_budget = max(10.0, 5 * timeout)
        self._transport = AgentTransport(agent_url, timeout)
        self._log = RateLimitedLog(log)
        self._lock = threading.Lock()  # guards the worker's start and the batch being sent
        self._buffer = _new_buffer(max_buffer_bytes, max_buffer_traces, max_payload_bytes,
                                   self._lock)
        self._reset_threading_state()
        _LIVE_WRITERS.add(self)

    def _reset_threading_state(self) -> None:
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._fork_dropped_spans = 0
        self._in_flight: Optional[_Batch] = None  # the batch _send_buffer is sending

    # -- the app thread's side ------------------------------------------------------------------

    def write(self, spans: Sequence[Any]) -> None:
        """Buffer one trace chunk for sending. Never blocks on the network, never raises."""
        # The buffer's put() encodes and appends in one call: the rest happens only for its
        # unusual answers. This runs for every trace on the application's thread; where the
        # native module is built, a C twin of this method replaces it (see python_write below).
        try:
            status = self._buffer.put(spans)
        except Exception as e:
            self._drop_unencodable(spans, e)
            return
        if status:
            self._after_put(spans, status)

    def _drop_unencodable(self, spans: Sequence[Any], error: Exception) -> None:
        try:
            self._count_fork_drops()
            STATS.incr("spans.dropped.encoding", len(spans))
            self._log.log(logging.WARNING, "encoding",
                          "dropping a trace that cannot be encoded: %s", error)
        except Exception:
            self._write_failed()

    def _after_put(self, spans: Sequence[Any], status: int) -> None:
        """What write() does about put()'s answer ``status`` other than 0."""
        try:
            self._count_fork_drops()
            if status < 0:
                size = -status
                if size + MAX_ARRAY_HEADER_SIZE > self.max_payload_bytes:
                    STATS.incr("spans.dropped.payload_too_large", len(spans))
                    self._log.log(logging.WARNING, "too_large",
                                  "dropping a trace of %d bytes: the payload limit is %d bytes",
                                  size, self.max_payload_bytes)
                else:
                    STATS.incr("spans.dropped.buffer_full", len(spans))
                    self._log.log(logging.WARNING, "buffer_full",
                                  "trace buffer full (%d traces, %d bytes): dropping a trace of "
                                  "%d bytes", self.max_buffer_traces, self.max_buffer_bytes, size)
                return
            if status & CLOSED:
                STATS.incr("spans.dropped.shutdown", len(spans))
                return
            if status & START:
                self._start_worker()
            if status & WAKE and not self._wake.is_set():
                self._wake.set()
        except Exception:
            self._write_failed()

    def _write_failed(self) -> None:
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
            self._buffer.needs_worker = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes of encoded traces waiting in the buffer (never above ``max_buffer_bytes``)."""
        return self._buffer.bytes

    @property
    def buffered_traces(self) -> int:
        return len(self._buffer)

    # The bounds live in the buffer, which applies them.
    max_buffer_bytes = _buffer_field("max_bytes")
    max_buffer_traces = _buffer_field("max_traces")
    max_payload_bytes = _buffer_field("max_payload_bytes")

    # -- sending --------------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send what is buffered now, from this thread; True if all of it was delivered.

        Waits for a send in progress first. ``timeout=None`` means the writer's ``send_budget``.
        """
        return self._flush(timeout, interrupt=None)

    def _flush(self, timeout: Optional[float], interrupt: Optional[threading.Event]) -> bool:
        try:
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
        self._buffer.closed = True
        self._stopping.set()
        self._wake.set()
        try:
            self._flush(max(deadline - time.monotonic(), 0.0), interrupt=None)
            worker = self._worker
            if worker is not None and worker is not threading.current_thread():
                worker.join(max(deadline - time.monotonic(), 0.0))
            # Whatever is left (a send we could not wait for kept the lock) is lost at exit.
            unsent = self._buffer.take()
            lost = [unsent.spans] if len(unsent) else []
            with self._lock:  # and so is the batch that send holds, unless it ends first
                in_flight = self._in_flight
                if in_flight is not None and not in_flight.abandoned:
                    in_flight.abandoned = True
                    lost.append(in_flight.unsettled)
            if lost:
                STATS.incr("spans.dropped.shutdown", sum(lost))
            self._transport.close()
        except Exception:
            STATS.incr("writer.errors")
            self._log.log(logging.ERROR, "stop", "ddagent writer stop failed", exc_info=True)

    def _deadline(self, timeout: Optional[float]) -> float:
        return time.monotonic() + (self.send_budget if timeout is None else max(timeout, 0.0))

    def _send_buffer(self, deadline: float, interrupt: Optional[threading.Event]) -> bool:
        """Take the buffer and send it as one or more payloads. True if everything was delivered.

        Setting ``interrupt`` cuts retries short (the worker's, so that ``stop`` gets the lock).
        """
        if not self._send_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return False
        try:
            batch = _Batch(self._buffer.take())
            taken = batch.traces
            self._in_flight = batch
            delivered = True
            for start, end in taken.payloads(self.max_payload_bytes - MAX_ARRAY_HEADER_SIZE):
                outcomes = self._deliver(taken, start, end, deadline, interrupt)
                if not self._settle(batch, taken.span_count(start, end)):
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
        self, taken: Any, start: int, end: int, deadline: float,
        interrupt: Optional[threading.Event],
    ) -> list[tuple[Optional[str], int, int]]:
        """Send the run ``start:end`` of ``taken`` (encoded traces) as one payload; what became
        of them as (drop reason or None for sent, traces, spans).

        A 400 may come from one span whose types the agent refuses (encoding is optimistic, see
        ddagent/writer/encoding.py): the traces are then repaired and sent once more, without
        the ones that cannot be repaired, so one bad span costs only its own trace."""
        count, spans = end - start, taken.span_count(start, end)
        try:
            self._send_payload(taken.body(start, end), count, deadline, interrupt)
            return [(None, count, spans)]
        except _Failure as failure:
            # Its traceback holds _send_payload's frame, whose locals hold the failure and the
            # body: a cycle that would keep megabytes alive until a full GC.
            failure.__traceback__ = None
            if failure.status != 400:
                return [(failure.reason, count, spans)]
            first_failure = failure
        traces = taken.traces(start, end)
        repaired, repaired_spans, problems = [], 0, []
        for encoded, trace_spans in zip(traces, taken.span_counts(start, end)):
            try:
                repaired.append(repair_trace(encoded))
                repaired_spans += trace_spans
            except EncodingError as e:
                problems.append(str(e))
        if repaired == traces:  # the 400 was about something else
            return [(first_failure.reason, count, spans)]
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
        # So that the child sees a consistent buffer (the Python one appends under this lock;
        # the native one only while it holds the GIL, which the forking thread holds).
        self._lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        # The parent keeps (and sends) its buffer; the child starts empty, with a fresh
        # connection and no worker (one starts on the next write).
        old = self._buffer
        stopping = self._stopping.is_set()
        self._lock = threading.Lock()
        self._buffer = _new_buffer(old.max_bytes, old.max_traces, old.max_payload_bytes,
                                   self._lock)
        self._reset_threading_state()
        self._fork_dropped_spans = old.spans
        if stopping:
            self._buffer.closed = True
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


python_write = AgentWriter.write
"""``AgentWriter.write`` in Python: the method where the native module is not built, and what its
C twin (``writer_write`` in ddagent/writer/_encoder.c) does."""

if native_encoder is not None:
    AgentWriter.write = native_encoder.write_method(AgentWriter)  # type: ignore[method-assign]

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
