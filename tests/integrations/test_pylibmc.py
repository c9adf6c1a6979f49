"""pylibmc against a real memcached: spans at the test agent, errors, runtime toggling."""

from __future__ import annotations

import pytest

pylibmc = pytest.importorskip("pylibmc")

from ddagent import probes  # noqa: E402
from ddagent.pin import Pin  # noqa: E402
from ddagent.stats import STATS  # noqa: E402
from ddagent.tracer import tracer as global_tracer  # noqa: E402
from tests.integrations import servers  # noqa: E402
from tests.integrations.conftest import enabled, spans_named  # noqa: E402

CLIENT_ATTRIBUTES = dict(vars(pylibmc.Client))


@pytest.fixture(scope="module")
def memcached_address():
    with servers.memcached() as address:
        yield address


@pytest.fixture
def pylibmc_probes():
    yield from enabled("pylibmc")


@pytest.fixture
def client(memcached_address):
    c = pylibmc.Client([memcached_address])
    c.flush_all()
    return c


def test_single_and_multi_key_commands(pylibmc_probes, client, agent_tracer, test_agent,
                                       memcached_address):
    with agent_tracer.trace("app.work", service="app") as root:
        assert client.set("ddagent:a", "x") is True
        assert client.get("ddagent:a") == "x"
        assert client.get("ddagent:missing") is None
        assert client.set_multi({"ddagent:b": 1, "ddagent:c": 2}) == []
        assert client.get_multi(["ddagent:a", "ddagent:b", "ddagent:missing"]) == {
            "ddagent:a": "x", "ddagent:b": 1}
        assert client.incr("ddagent:b", 5) == 6
        assert client.delete_multi(["ddagent:b", "ddagent:c"]) is True
        assert client["ddagent:a"] == "x"  # the mapping interface goes through get
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "memcached.cmd")
    assert [s["resource"] for s in spans] == [
        "set", "get", "get", "set_multi", "get_multi", "incr", "delete_multi", "get"]
    port = int(memcached_address.rsplit(":", 1)[1])
    for span in spans:
        assert span["service"] == "memcached"
        assert span["type"] == "cache"
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
        assert span["meta"]["component"] == "pylibmc"
        assert span["meta"]["db.system"] == "memcached"
        assert span["meta"]["span.kind"] == "client"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["meta"]["server.address"] == "127.0.0.1"
        assert span["metrics"]["network.destination.port"] == port
        assert span["metrics"]["_dd.measured"] == 1
    set_a, hit, miss, set_multi, get_multi, incr, delete_multi, item = spans
    assert set_a["meta"]["memcached.query"] == "set ddagent:a"
    assert incr["meta"]["memcached.query"] == "incr ddagent:b"
    assert "memcached.query" not in get_multi["meta"]
    assert hit["metrics"]["db.row_count"] == 1
    assert miss["metrics"]["db.row_count"] == 0
    assert get_multi["metrics"]["db.row_count"] == 2
    test_agent.assert_no_check_failures()


def test_an_error_reply_marks_the_span_and_the_app_gets_pylibmc_error(
        pylibmc_probes, client, agent_tracer, test_agent):
    client.set("ddagent:text", "not a number")
    with pytest.raises(pylibmc.ClientError):  # memcached: CLIENT_ERROR non-numeric value
        client.incr("ddagent:text")
    with pytest.raises(pylibmc.NotFound):
        client.incr("ddagent:missing")
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(3), "memcached.cmd")
    by_query = {s["meta"]["memcached.query"]: s for s in spans}
    not_numeric, not_found = by_query["incr ddagent:text"], by_query["incr ddagent:missing"]
    assert not_numeric["error"] == 1
    assert not_numeric["meta"]["error.type"] == "pylibmc.ClientError"
    assert not_found["error"] == 1
    assert not_found["meta"]["error.type"] == "pylibmc.NotFound"
    assert by_query["set ddagent:text"]["error"] == 0


def test_service_from_pin_and_env_and_cloned_clients(pylibmc_probes, client, list_writer,
                                                     monkeypatch):
    monkeypatch.setenv("DD_PYLIBMC_SERVICE", "cache-from-env")
    client.get("k")
    Pin.override(client, service="cache-from-pin")
    client.get("k")
    pool = pylibmc.ClientPool(client, 1)  # pooled clients are clones: the same Python class
    with pool.reserve() as pooled:
        pooled.get("k")
    assert [s.service for s in list_writer.spans] == [
        "cache-from-env", "cache-from-pin", "cache-from-env"]


def test_several_servers_record_no_guessed_peer(pylibmc_probes, memcached_address, list_writer):
    client = pylibmc.Client([memcached_address, memcached_address.replace("127.0.0.1",
                                                                         "localhost")])
    client.get("k")
    [span] = list_writer.spans
    assert "out.host" not in span.meta
    assert "network.destination.port" not in span.metrics
    assert span.meta["db.system"] == "memcached"


def test_disabled_tracer_or_integration_never_breaks_calls(client, list_writer):
    """The seed crashed here (``with None:``): a disabled tracer must be a pass-through."""
    probes.enable("pylibmc")
    global_tracer.enabled = False
    try:
        assert client.set("ddagent:a", "x") is True
        assert client.get("ddagent:a") == "x"
        assert client.get_multi(["ddagent:a"]) == {"ddagent:a": "x"}
        with pytest.raises(pylibmc.NotFound):
            client.incr("ddagent:missing")
    finally:
        global_tracer.enabled = True
        probes.disable("pylibmc")
    assert list_writer.spans == []


def test_runtime_disable_restores_the_class_and_enable_traces_again(client, list_writer):
    probes.enable("pylibmc")
    assert "get" in vars(pylibmc.Client)
    client.get("k")
    probes.disable("pylibmc")
    assert dict(vars(pylibmc.Client)) == CLIENT_ATTRIBUTES
    assert client.get("k") is None
    assert len(list_writer.spans) == 1
    probes.enable("pylibmc")
    try:
        client.get("k")
    finally:
        probes.disable("pylibmc")
    assert len(list_writer.spans) == 2
    [row] = [r for r in probes.status() if r["name"] == "pylibmc"]
    assert row["installed"] and row["version"] == pylibmc.__version__ and not row["enabled"]


def test_a_failing_probe_is_counted_and_disables_pylibmc(pylibmc_probes, client, list_writer):
    class BrokenTracer:
        enabled = True

        def trace(self, *args, **kwargs):
            raise RuntimeError("probe bug")

    before = STATS.get("probes.errors.pylibmc")
    Pin.override(client, tracer=BrokenTracer())
    assert client.set("ddagent:a", "1") is True  # the application call is not affected
    assert client.get("ddagent:a") == "1"
    assert STATS.get("probes.errors.pylibmc") == before + 1
    assert dict(vars(pylibmc.Client)) == CLIENT_ATTRIBUTES
    assert list_writer.spans == []
