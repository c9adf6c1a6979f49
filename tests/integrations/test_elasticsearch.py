"""elasticsearch-py (7.17, 8.x, 9.x) against the project's HTTP stand-in
(tests/standins/elasticsearch.py): spans at the test agent, errors, runtime toggling."""

from __future__ import annotations

import json

import pytest

elasticsearch = pytest.importorskip("elasticsearch")

from ddagent import probes  # noqa: E402
from ddagent.hooks import rewrite  # noqa: E402
from ddagent.hooks.elasticsearch import MAX_BODY_LENGTH, quantize_path  # noqa: E402
from ddagent.pin import Pin  # noqa: E402
from tests.integrations.conftest import enabled, spans_named  # noqa: E402
from tests.standins.elasticsearch import running_elasticsearch  # noqa: E402

MAJOR = elasticsearch.VERSION[0]
if MAJOR >= 8:
    from elasticsearch._sync.client._base import BaseClient
    PROBED = BaseClient.perform_request
else:
    PROBED = elasticsearch.Transport.perform_request
ORIGINAL_CODE = PROBED.__code__


@pytest.fixture(scope="module")
def standin():
    with running_elasticsearch() as server:
        yield server


@pytest.fixture
def es(standin):
    client = elasticsearch.Elasticsearch(standin.url)
    yield client
    client.close()


@pytest.fixture
def es_probes():
    yield from enabled("elasticsearch")


def _index(es, index: str, doc_id: str, document: dict):
    return es.index(index=index, id=doc_id, document=document)


def _search(es, index: str, query: dict, **params):
    return es.search(index=index, query=query, **params)


def test_index_get_search_spans(probe_mechanism, es_probes, es, standin, agent_tracer,
                                test_agent):
    with agent_tracer.trace("app.work", service="app") as root:
        assert _index(es, "books", "42", {"title": "Dune"})["result"] == "created"
        assert _index(es, "books", "abc", {"title": "Emma"})["result"] == "created"
        assert es.get(index="books", id="42")["_source"] == {"title": "Dune"}
        result = _search(es, "books", {"match": {"title": "dune"}}, routing="r1")
        assert result["hits"]["total"]["value"] == 2
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "elasticsearch.query")
    assert [s["resource"] for s in spans] == [
        "PUT /books/_doc/?", "PUT /books/_doc/?", "GET /books/_doc/?", "POST /books/_search"]
    for span in spans:
        assert span["service"] == "elasticsearch"
        assert span["type"] == "elasticsearch"
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
        assert span["meta"]["component"] == "elasticsearch"
        assert span["meta"]["span.kind"] == "client"
        assert span["meta"]["out.host"] == "127.0.0.1"
        assert span["meta"]["server.address"] == "127.0.0.1"
        assert span["metrics"]["_dd.measured"] == 1
    put, _, get, search = spans
    assert put["meta"]["elasticsearch.method"] == "PUT"
    assert put["meta"]["elasticsearch.url"] == "/books/_doc/42"
    assert put["meta"]["elasticsearch.params"] == ""
    assert "elasticsearch.body" not in put["meta"]  # documents are not recorded
    assert get["meta"]["elasticsearch.url"] == "/books/_doc/42"
    assert search["meta"]["elasticsearch.params"] == "routing=r1"
    assert json.loads(search["meta"]["elasticsearch.body"])["query"] == {
        "match": {"title": "dune"}}
    assert search["metrics"]["elasticsearch.took"] == 3
    if MAJOR >= 8:
        assert [s["meta"]["http.status_code"] for s in spans] == ["201", "201", "200", "200"]
    # The client really talked to the stand-in (and passed its product check).
    assert ("POST", "/books/_search") in [(r.method, r.path) for r in standin.requests]
    test_agent.assert_no_check_failures()


def test_an_error_status_marks_the_span_and_the_app_gets_the_clients_exception(
        probe_mechanism, es_probes, es, agent_tracer, test_agent):
    with pytest.raises(elasticsearch.NotFoundError) as info:
        es.get(index="missing", id="1")
    assert info.value.status_code == 404
    agent_tracer.flush(10)

    [span] = [s for s in spans_named(test_agent.wait_for_traces(1), "elasticsearch.query")
              if s["resource"] == "GET /missing/_doc/?"]
    assert span["error"] == 1
    error_class = type(info.value)
    assert span["meta"]["error.type"] == f"{error_class.__module__}.{error_class.__qualname__}"
    assert "index_not_found_exception" in span["meta"]["error.message"]
    assert "404" in span["meta"]["error.message"]


def test_a_large_search_body_is_left_out(es_probes, es, list_writer):
    _search(es, "books", {"terms": {"title": ["x" * 50] * (MAX_BODY_LENGTH // 50)}})
    [span] = [s for s in list_writer.spans if s.resource == "POST /books/_search"]
    assert "elasticsearch.body" not in span.meta


def test_service_from_pin_and_from_env(es_probes, es, list_writer, monkeypatch):
    monkeypatch.setenv("DD_ELASTICSEARCH_SERVICE", "search-from-env")
    es.get(index="books", id="42")
    Pin.override(es.transport if MAJOR < 8 else es, service="search-from-pin")
    es.get(index="books", id="42")
    services = [s.service for s in list_writer.spans if s.resource == "GET /books/_doc/?"]
    assert services == ["search-from-env", "search-from-pin"]


def test_disable_restores_the_code_and_enable_traces_again(es, list_writer):
    probes.enable("elasticsearch")
    es.info()
    traced = len(list_writer.spans)
    assert traced == 1
    probes.disable("elasticsearch")
    assert PROBED.__code__ is ORIGINAL_CODE
    es.info()
    assert len(list_writer.spans) == traced
    probes.enable("elasticsearch")
    try:
        assert rewrite.is_instrumented(PROBED)
        es.info()
    finally:
        probes.disable("elasticsearch")
    assert [s.resource for s in list_writer.spans] == ["GET /", "GET /"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_deprecated_transport_alias_of_8x_is_not_probed_twice(es_probes, es, list_writer):
    if MAJOR != 8:
        pytest.skip("only 8.x has elasticsearch.transport as an alias of elastic_transport's")
    import elasticsearch.transport  # noqa: F401

    es.info()
    assert [s.resource for s in list_writer.spans] == ["GET /"]


def test_without_the_product_header_the_client_refuses_the_server(es_probes, standin,
                                                                   monkeypatch, list_writer):
    """The stand-in is only useful because it passes the client's product check."""
    from tests.standins import elasticsearch as standin_module

    original_send = standin_module._Handler._send

    def send_without_product(handler, status, answer):
        handler.send_header = _dropping_product(handler.send_header)
        original_send(handler, status, answer)

    monkeypatch.setattr(standin_module._Handler, "_send", send_without_product)
    client = elasticsearch.Elasticsearch(standin.url)
    with pytest.raises(elasticsearch.UnsupportedProductError):
        client.info()
    client.close()
    assert list_writer.spans[-1].error == 1


def _dropping_product(send_header):
    def send(name, value):
        if name != "X-Elastic-Product":
            send_header(name, value)
    return send


@pytest.mark.parametrize("path, resource", [
    ("/books/_doc/42", "/books/_doc/?"),
    ("/books/_doc/a-b-c", "/books/_doc/?"),
    ("/books/_update/x", "/books/_update/?"),
    ("/logs-2024/_search?q=1", "/logs-2024/_search"),
    ("/_nodes/12/stats", "/_nodes/?/stats"),
    ("/", "/"),
])
def test_ids_are_replaced_in_the_resource(path, resource):
    assert quantize_path(path) == resource
