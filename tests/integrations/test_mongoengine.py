"""MongoEngine: its operations appear as pymongo.cmd spans (briskdb server, see
tests/standins/mongodb.py)."""

from __future__ import annotations

import pytest

mongoengine = pytest.importorskip("mongoengine")
pytest.importorskip("briskdb")

from ddagent import probes  # noqa: E402
from tests.integrations.conftest import spans_named  # noqa: E402
from tests.standins.mongodb import running_mongodb  # noqa: E402


class Artist(mongoengine.Document):
    first_name = mongoengine.StringField(max_length=50)
    last_name = mongoengine.StringField(max_length=50)


@pytest.fixture(scope="module")
def connection(tmp_path_factory):
    with running_mongodb(tmp_path_factory.mktemp("mongoengine")) as uri:
        mongoengine.connect("ddagent", host=uri, directConnection=True,
                            serverSelectionTimeoutMS=3000, uuidRepresentation="standard")
        yield
        mongoengine.disconnect()


@pytest.fixture
def mongoengine_probes():
    probes.enable("mongoengine")
    yield
    probes.disable("mongoengine")


def test_document_operations_are_pymongo_spans(mongoengine_probes, connection, agent_tracer,
                                               test_agent):
    with agent_tracer.trace("app.work", service="app"):
        Artist.drop_collection()
        Artist(first_name="Joni", last_name="Mitchell").save()
        assert Artist.objects(first_name="Joni").count() == 1
        Artist.objects(first_name="Joni").update(set__last_name="M")
        assert Artist.objects.get(first_name="Joni").last_name == "M"
        Artist.objects(first_name="Joni").delete()
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "pymongo.cmd")
    resources = [s["resource"] for s in spans]
    assert "insert artist" in resources
    assert 'aggregate artist {"first_name": "?"}' in resources
    assert 'update artist {"first_name": "?"}' in resources
    assert 'find artist {"first_name": "?"}' in resources
    assert 'delete artist {"first_name": "?"}' in resources
    for span in spans:
        assert span["service"] == "pymongo"
        assert span["meta"]["component"] == "pymongo"
        assert span["meta"]["mongodb.db"] == "ddagent"
    test_agent.assert_no_check_failures()


def test_disabling_mongoengine_turns_off_the_pymongo_spans_it_turned_on(connection,
                                                                         list_writer):
    probes.enable("mongoengine")
    Artist.objects.count()
    assert len(list_writer.spans) == 1
    probes.disable("mongoengine")
    Artist.objects.count()
    assert len(list_writer.spans) == 1


def test_pymongo_enabled_by_the_user_stays_on(connection, list_writer):
    probes.enable("pymongo")
    try:
        probes.enable("mongoengine")
        probes.disable("mongoengine")
        Artist.objects.count()
        assert len(list_writer.spans) == 1
    finally:
        probes.disable("pymongo")
