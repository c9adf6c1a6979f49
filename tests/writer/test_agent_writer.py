"""The writer against the real trace-agent peer (ddapm-test-agent)."""

from __future__ import annotations

import base64
import os
import tempfile
import time

import msgpack

from ddagent.version import __version__
from tests import testagent
from tests.counters import StatsDelta
from tests.testagent import TestAgent
from tests.writer.helpers import make_trace


def trace_requests(test_agent: TestAgent) -> list[dict]:
    return [r for r in test_agent.requests() if "/traces" in r["url"]]


def test_traces_arrive_intact(test_agent, make_writer):
    stats = StatsDelta()
    writer = make_writer(test_agent.url)
    nested = make_trace(3, service="thumbs", span_type="web",
                        meta={"user.id": "42"}, metrics={"size": 1024})
    nested[0].trace_id |= 0x6B0BDAAA << 96  # 128-bit; only the low half goes on the wire
    nested[0].meta["_dd.p.tid"] = "6b0bdaaa00000000"
    nested[2].error = 1
    others = [make_trace(1), make_trace(2)]
    for trace in [nested, *others]:
        writer.write(trace)

    assert writer.flush(timeout=10)

    traces = test_agent.wait_for_traces(3)
    assert sorted(len(t) for t in traces) == [1, 2, 3]
    (received,) = [t for t in traces if len(t) == 3]
    by_name = {span["name"]: span for span in received}
    root, child, grandchild = by_name["root"], by_name["child1"], by_name["child2"]
    assert root["trace_id"] == nested[0].trace_id & (2**64 - 1)
    assert root["parent_id"] == 0
    assert child["parent_id"] == root["span_id"] == nested[0].span_id
    assert grandchild["parent_id"] == child["span_id"]
    assert root["service"] == "thumbs" and root["resource"] == "res" and root["type"] == "web"
    assert root["meta"] == {"user.id": "42", "_dd.p.tid": "6b0bdaaa00000000"}
    assert root["metrics"] == {"size": 1024.0}
    assert grandchild["error"] == 1
    test_agent.assert_no_check_failures()
    assert (stats["spans.sent"], stats["traces.sent"], stats["payloads.sent"]) == (6, 3, 1)
    assert stats.dropped() == {}


def test_request_headers(test_agent, make_writer):
    writer = make_writer(test_agent.url)
    writer.write(make_trace(1))
    writer.write(make_trace(1))
    assert writer.flush(timeout=10)

    test_agent.wait_for_traces(2)
    (request,) = trace_requests(test_agent)
    headers = {k.lower(): v for k, v in request["headers"].items()}
    body = base64.b64decode(request["body"])
    assert request["method"] == "PUT" and request["url"].endswith("/v0.4/traces")
    assert headers["content-type"] == "application/msgpack"
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers
    assert headers["x-datadog-trace-count"] == "2" == str(len(msgpack.unpackb(body)))
    assert headers["datadog-meta-lang"] == "python"
    assert headers["datadog-meta-lang-version"].count(".") == 2
    assert headers["datadog-meta-lang-interpreter"] == "CPython"
    assert headers["datadog-meta-tracer-version"] == __version__
    test_agent.assert_no_check_failures()


def test_rate_by_service_reaches_the_callback(test_agent, make_writer):
    rates = {"service:web,env:prod": 0.5, "service:,env:": 0.25}
    test_agent.start_session(rate_by_service=rates)
    try:
        received: list[dict] = []
        writer = make_writer(test_agent.url, on_rate_by_service=received.append)
        writer.write(make_trace(1))
        assert writer.flush(timeout=10)
        assert received == [rates]
        assert len(test_agent.wait_for_traces(1)) == 1
    finally:
        test_agent.start_session()


def test_a_failing_rates_callback_is_contained(test_agent, make_writer):
    stats = StatsDelta()

    def broken(rates: dict) -> None:
        raise RuntimeError("boom")

    writer = make_writer(test_agent.url, on_rate_by_service=broken)
    writer.write(make_trace(1))
    assert writer.flush(timeout=10)
    assert stats["writer.errors"] == 1 and stats["spans.sent"] == 1


def test_large_batches_are_split_into_payloads_under_the_limit(test_agent, make_writer):
    stats = StatsDelta()
    writer = make_writer(test_agent.url, max_payload_bytes=2000, flush_interval=3600)
    traces = [make_trace(2, meta={"pad": "x" * 200}) for _ in range(30)]
    for trace in traces:
        writer.write(trace)
    assert writer.flush(timeout=10)

    assert len(test_agent.wait_for_traces(30)) == 30
    requests = trace_requests(test_agent)
    assert len(requests) == stats["payloads.sent"] > 1
    for request in requests:
        body = base64.b64decode(request["body"])
        assert len(body) <= 2000
        count = {k.lower(): v for k, v in request["headers"].items()}["x-datadog-trace-count"]
        assert int(count) == len(msgpack.unpackb(body))
    test_agent.assert_no_check_failures()


def test_a_trace_the_agent_refuses_is_dropped_alone(test_agent, make_writer):
    stats = StatsDelta()
    writer = make_writer(test_agent.url)
    bad = make_trace(2)
    bad[1].meta["port"] = 8080  # an int in meta: the agent refuses the whole payload
    good = [make_trace(1), make_trace(1)]
    writer.write(good[0])
    writer.write(bad)
    writer.write(good[1])
    assert writer.flush(timeout=10)

    # The first payload got a 400 (the test agent then refuses to list the session's traces,
    # so read the requests); the second carries the two good traces.
    refused, resent = trace_requests(test_agent)
    assert len(msgpack.unpackb(base64.b64decode(refused["body"]))) == 3
    assert [[s["span_id"] for s in t] for t in msgpack.unpackb(base64.b64decode(resent["body"]))] \
        == [[s.span_id for s in t] for t in good]
    assert stats["spans.dropped.encoding"] == 2
    assert stats["spans.sent"] == 2
    test_agent.assert_no_check_failures()


def test_a_trace_larger_than_a_payload_is_dropped(make_writer, local_agent):
    stats = StatsDelta()
    agent = local_agent()
    writer = make_writer(agent.url, max_payload_bytes=1000)
    writer.write(make_trace(1, meta={"big": "x" * 2000}))
    assert writer.flush(timeout=10)
    assert stats["spans.dropped.payload_too_large"] == 1 and agent.requests == []


def test_the_background_thread_sends_without_an_explicit_flush(test_agent, make_writer):
    writer = make_writer(test_agent.url, flush_interval=0.2)
    writer.write(make_trace(2))
    writer.write(make_trace(1))
    assert len(test_agent.wait_for_traces(2)) == 2


def test_a_half_full_buffer_is_sent_before_the_interval(test_agent, make_writer):
    writer = make_writer(test_agent.url, flush_interval=3600, max_buffer_traces=10)
    for _ in range(6):
        writer.write(make_trace(1))
    assert len(test_agent.wait_for_traces(6)) == 6


def test_stop_sends_what_is_still_buffered(test_agent, make_writer):
    writer = make_writer(test_agent.url, flush_interval=3600)
    for _ in range(5):
        writer.write(make_trace(2))
    started = time.monotonic()
    writer.stop(timeout=5)
    assert time.monotonic() - started < 10  # generous: only "within the deadline" matters
    assert len(test_agent.wait_for_traces(5)) == 5


def test_writes_after_stop_are_dropped_and_counted(test_agent, make_writer):
    stats = StatsDelta()
    writer = make_writer(test_agent.url)
    writer.stop(timeout=1)
    writer.write(make_trace(3))
    assert stats["spans.dropped.shutdown"] == 3


def test_unix_socket_agent_url(make_writer):
    with tempfile.TemporaryDirectory() as tmp:
        socket_path = os.path.join(tmp, "apm.socket")
        process = testagent.TestAgentProcess(extra_env={"DD_APM_RECEIVER_SOCKET": socket_path})
        try:
            agent = TestAgent(process)
            received: list[dict] = []
            writer = make_writer(f"unix://{socket_path}", on_rate_by_service=received.append)
            writer.write(make_trace(2))
            assert writer.flush(timeout=10)
            writer.write(make_trace(1))  # the second payload reuses the kept-alive connection
            assert writer.flush(timeout=10)

            assert sorted(len(t) for t in agent.wait_for_traces(2)) == [1, 2]
            assert received  # the answer came back over the socket too
            agent.assert_no_check_failures()
        finally:
            process.stop()
