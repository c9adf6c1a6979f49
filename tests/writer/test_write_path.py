"""AgentWriter.write's answers to its buffer's unusual answers, on the native path (the C write()
and buffer of ddagent/writer/_encoder.c) and on the Python one alike (the writer_path fixture)."""

from __future__ import annotations

import logging

import pytest

from ddagent.writer import AgentWriter, agent
from tests.counters import StatsDelta
from tests.writer.helpers import FakeSpan, make_trace, wait_until

URL = "http://127.0.0.1:9"  # nothing is sent in these tests


def test_the_path_under_test_is_installed(make_writer, writer_path):
    writer = make_writer(URL)
    native = writer_path == "native"
    assert (AgentWriter.write is not agent.python_write) == native
    assert (type(writer._buffer) is not agent.PythonSendBuffer) == native


def test_the_worker_starts_on_the_first_buffered_trace(make_writer):
    writer = make_writer(URL, flush_interval=3600)
    writer.write([])
    assert writer._worker is None
    writer.write(make_trace(1))
    worker = writer._worker
    assert worker is not None and worker.is_alive()
    writer.write(make_trace(1))
    assert writer._worker is worker and writer.buffered_traces == 2


def test_a_worker_that_cannot_start_is_counted_and_tried_again(make_writer, monkeypatch):
    stats = StatsDelta()
    writer = make_writer(URL, flush_interval=3600)
    started = writer._start_worker

    def failing() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(writer, "_start_worker", failing)
    writer.write(make_trace(1))  # buffered, and the failure is contained
    assert stats["writer.errors"] == 1 and writer.buffered_traces == 1
    monkeypatch.setattr(writer, "_start_worker", started)
    writer.write(make_trace(1))
    assert writer._worker is not None


def test_a_trace_that_cannot_be_encoded_is_dropped_and_counted(make_writer, caplog):
    stats = StatsDelta()
    writer = make_writer(URL, flush_interval=3600)
    bad = make_trace(2)
    bad[1].span_id = 0
    with caplog.at_level(logging.WARNING, logger="ddagent.writer"):
        writer.write(bad)
        writer.write(make_trace(1))
    assert stats["spans.dropped.encoding"] == 2 and writer.buffered_traces == 1
    assert any("cannot be encoded" in r.getMessage() for r in caplog.records)


def test_what_is_not_a_sequence_is_a_writer_error(make_writer):
    stats = StatsDelta()
    writer = make_writer(URL)
    writer.write(42)
    assert stats["writer.errors"] == 1 and stats.dropped() == {}


def test_an_interrupt_while_encoding_goes_on_up(make_writer):
    class Interrupting(FakeSpan):
        @property
        def meta(self):
            raise KeyboardInterrupt

        @meta.setter
        def meta(self, value):
            pass

    writer = make_writer(URL)
    (span,) = make_trace(1)
    with pytest.raises(KeyboardInterrupt):
        writer.write([Interrupting(**vars(span))])


def test_bounds_set_after_construction_apply(make_writer, caplog):
    stats = StatsDelta()
    writer = make_writer(URL, flush_interval=3600)
    writer.max_buffer_traces = 2
    with writer._send_lock, caplog.at_level(logging.WARNING, logger="ddagent.writer"):
        for _ in range(3):  # the worker, woken at half full, waits for the lock to send
            writer.write(make_trace(2))
        assert writer.buffered_traces == 2 and stats["spans.dropped.buffer_full"] == 2
    assert any("trace buffer full (2 traces" in r.getMessage() for r in caplog.records)
    writer.max_payload_bytes = 100
    writer.write(make_trace(1, meta={"pad": "x" * 200}))
    assert stats["spans.dropped.payload_too_large"] == 1
    assert (writer.max_buffer_traces, writer.max_payload_bytes) == (2, 100)


def test_a_half_full_buffer_wakes_the_worker(make_writer):
    writer = make_writer(URL, flush_interval=3600, max_buffer_traces=4)
    writer.write(make_trace(1))
    writer.write(make_trace(1))
    assert not writer._wake.is_set() and writer.buffered_traces == 2
    writer.write(make_trace(1))
    assert wait_until(lambda: writer.buffered_traces == 0)  # taken by the worker to send


def test_a_subclass_writes_alike(writer_path, local_agent):
    class Writer(AgentWriter):
        pass

    agent_ = local_agent()
    writer = Writer(agent_.url, flush_interval=3600)
    try:
        writer.write(make_trace(2))
        assert writer.buffered_traces == 1
        assert writer.flush(timeout=10) and len(agent_.requests) == 1
    finally:
        writer.stop(timeout=1)
