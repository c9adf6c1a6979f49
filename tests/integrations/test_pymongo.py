"""PyMongo against a MongoDB wire-protocol server (briskdb, see tests/standins/mongodb.py):
spans at the test agent, error replies, runtime toggling."""

from __future__ import annotations

import asyncio

import pytest

pymongo = pytest.importorskip("pymongo")
pytest.importorskip("briskdb")

from pymongo.synchronous import bulk, pool, server  # noqa: E402

try:  # pymongo 4.18+ runs find/getMore here instead of in Server.run_operation
    from pymongo.synchronous.cursor_base import _CursorBase as _CursorBatches
except ImportError:
    _CursorBatches = None

from ddagent import probes  # noqa: E402
from ddagent.hooks import rewrite  # noqa: E402
from ddagent.hooks.pymongo import normalize_filter  # noqa: E402
from ddagent.pin import Pin  # noqa: E402
from tests.integrations.conftest import enabled, spans_named  # noqa: E402
from tests.standins.mongodb import running_mongodb  # noqa: E402

PROBED = [pool.Connection.command,
          server.Server.run_operation if _CursorBatches is None else _CursorBatches._run_with_conn,
          bulk._Bulk.write_command]
ORIGINAL_CODE = [f.__code__ for f in PROBED]


@pytest.fixture(scope="module")
def mongodb_uri(tmp_path_factory):
    with running_mongodb(tmp_path_factory.mktemp("mongodb")) as uri:
        yield uri


@pytest.fixture
def pymongo_probes():
    yield from enabled("pymongo")


@pytest.fixture
def users(mongodb_uri):
    client = pymongo.MongoClient(mongodb_uri, directConnection=True,
                                 serverSelectionTimeoutMS=3000)
    collection = client.ddagent.users
    collection.drop()
    yield collection
    client.close()


def _check_common(span: dict, port: int) -> None:
    assert span["service"] == "pymongo"
    assert span["type"] == "mongodb"
    assert span["meta"]["component"] == "pymongo"
    assert span["meta"]["span.kind"] == "client"
    assert span["meta"]["db.system"] == "mongodb"
    assert span["meta"]["mongodb.db"] == "ddagent"
    assert span["meta"]["mongodb.collection"] == "users"
    assert span["meta"]["out.host"] == "127.0.0.1"
    assert span["meta"]["server.address"] == "127.0.0.1"
    assert span["metrics"]["network.destination.port"] == port
    assert span["metrics"]["_dd.measured"] == 1


def test_crud_commands_are_children_of_the_user_span(probe_mechanism, pymongo_probes, users,
                                                     agent_tracer, test_agent):
    port = users.database.client.address[1]
    with agent_tracer.trace("app.work", service="app") as root:
        users.insert_one({"name": "ada", "age": 36})
        users.insert_many([{"name": "bob", "age": 25}, {"name": "cy", "age": 52}])
        found = list(users.find({"age": {"$gte": 30}, "name": {"$in": ["ada", "cy"]}})
                     .sort("age"))
        assert [d["name"] for d in found] == ["ada", "cy"]
        users.update_one({"name": "bob"}, {"$inc": {"age": 1}})
        assert users.count_documents({"age": {"$lt": 30}}) == 1
        assert users.delete_many({"$or": [{"name": "ada"}, {"age": 26}]}).deleted_count == 2
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(1), "pymongo.cmd")
    assert [s["resource"] for s in spans] == [
        "insert users",
        "insert users",
        'find users {"age": {"$gte": "?"}, "name": {"$in": "?"}}',
        'update users {"name": "?"}',
        'aggregate users {"age": {"$lt": "?"}}',
        'delete users {"$or": [{"name": "?"}, {"age": "?"}]}',
    ]
    for span in spans:
        _check_common(span, port)
        assert span["parent_id"] == root.span_id
        assert span["error"] == 0
    insert_one, insert_many, find, update = spans[:4]
    assert insert_one["metrics"]["mongodb.documents"] == 1
    assert insert_many["metrics"]["mongodb.documents"] == 2
    assert find["meta"]["mongodb.query"] == '{"age": {"$gte": "?"}, "name": {"$in": "?"}}'
    assert find["metrics"]["db.row_count"] == 2
    assert update["meta"]["mongodb.query"] == '{"name": "?"}'
    test_agent.assert_no_check_failures()


def test_the_asyncio_driver_is_traced_like_the_synchronous_one(
        probe_mechanism, pymongo_probes, mongodb_uri, agent_tracer, test_agent):
    async def work() -> list:
        client = pymongo.AsyncMongoClient(mongodb_uri, directConnection=True,
                                          serverSelectionTimeoutMS=3000)
        try:
            users = client.ddagent.users
            await users.drop()
            with agent_tracer.trace("app.work", service="app") as root:
                await users.insert_one({"name": "ada", "age": 36})
                await users.insert_many([{"name": "bob", "age": 25}, {"name": "cy", "age": 52}])
                found = [d["name"] async for d in users.find({"age": {"$gte": 30}})]
                await users.update_one({"name": "bob"}, {"$inc": {"age": 1}})
            return [root, (await client.address)[1], found]
        finally:
            await client.close()

    root, port, found = asyncio.run(work())
    assert sorted(found) == ["ada", "cy"]
    agent_tracer.flush(10)

    [trace] = [t for t in test_agent.wait_for_traces(1)
               if any(s["name"] == "app.work" for s in t)]
    spans = spans_named([trace], "pymongo.cmd")
    assert [s["resource"] for s in spans] == [
        "insert users", "insert users", 'find users {"age": {"$gte": "?"}}',
        'update users {"name": "?"}']
    for span in spans:
        _check_common(span, port)
        assert span["parent_id"] == root.span_id
    assert spans[1]["metrics"]["mongodb.documents"] == 2
    assert spans[2]["metrics"]["db.row_count"] == 2


def test_an_error_reply_marks_the_span_and_the_app_gets_pymongos_exception(
        probe_mechanism, pymongo_probes, users, agent_tracer, test_agent):
    with pytest.raises(pymongo.errors.OperationFailure) as info:
        users.database.command("noSuchCommand")
    assert info.value.code == 59
    users.create_index("name", unique=True)
    users.insert_one({"name": "ada"})
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        users.insert_one({"name": "ada"})
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(4), "pymongo.cmd")
    by_resource = {}
    for span in spans:
        by_resource.setdefault(span["resource"], []).append(span)
    [unknown] = by_resource["noSuchCommand 1"]
    assert unknown["error"] == 1
    assert unknown["meta"]["error.type"] == "pymongo.errors.OperationFailure"
    assert "CommandNotFound" in unknown["meta"]["error.message"]
    assert "Traceback" in unknown["meta"]["error.stack"]
    first, duplicate = by_resource["insert users"]
    assert first["error"] == 0
    assert duplicate["error"] == 1
    assert duplicate["meta"]["error.type"] == "pymongo.errors.DuplicateKeyError"
    assert duplicate["meta"]["error.message"]


def test_service_from_pin_and_from_env(pymongo_probes, users, agent_tracer, test_agent,
                                       monkeypatch):
    monkeypatch.setenv("DD_PYMONGO_SERVICE", "mongo-from-env")
    users.find_one({"name": "x"})
    Pin.override(users.database.client, service="mongo-from-pin")
    users.find_one({"name": "x"})
    agent_tracer.flush(10)

    spans = spans_named(test_agent.wait_for_traces(2), "pymongo.cmd")
    assert sorted(s["service"] for s in spans) == ["mongo-from-env", "mongo-from-pin"]


def test_handshake_and_heartbeats_are_not_traced(pymongo_probes, mongodb_uri, list_writer):
    client = pymongo.MongoClient(mongodb_uri, directConnection=True,
                                 serverSelectionTimeoutMS=3000)
    client.admin.command("ping")
    client.close()
    assert [s.resource for s in list_writer.spans] == ["ping 1"]


def test_disable_restores_the_code_and_enable_traces_again(users, list_writer):
    probes.enable("pymongo")
    users.find_one({})
    assert len(list_writer.spans) == 1
    probes.disable("pymongo")
    assert all(f.__code__ is code for f, code in zip(PROBED, ORIGINAL_CODE))
    users.insert_one({"name": "untraced"})
    users.find_one({})
    assert len(list_writer.spans) == 1
    probes.enable("pymongo")
    try:
        assert all(rewrite.is_instrumented(f) for f in PROBED)
        users.find_one({})
    finally:
        probes.disable("pymongo")
    assert len(list_writer.spans) == 2


@pytest.mark.parametrize("query, shape", [
    ({"a": 1}, {"a": "?"}),
    ({"a": {"$gt": 1, "$lt": 5}}, {"a": {"$gt": "?", "$lt": "?"}}),
    ({"tags": {"$all": ["x", "y"]}}, {"tags": {"$all": "?"}}),
    ({"$and": [{"a": 1}, {"b": [1, 2]}]}, {"$and": [{"a": "?"}, {"b": "?"}]}),
    ({"a": {"b": None}}, {"a": {"b": "?"}}),
])
def test_filter_shape_hides_every_value(query, shape):
    assert normalize_filter(query) == shape
