"""A probed coroutine, generator or async generator function has one span covering its whole
run, with code rewriting and with the wrapt fallback alike: the span is active inside the body,
ends when the body returns, raises or is closed, and records an escaping exception."""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

from ddagent import probes
from ddagent.hooks import registry, rewrite, wrappers
from ddagent.tracer import tracer
from tests.listwriter import ListWriter

BODYLIB = '''
import asyncio

from ddagent.tracer import tracer

SEEN = []  # the active span's name at each step of a body


def _note():
    span = tracer.current_span()
    SEEN.append(None if span is None else span.name)


async def fetch(x):
    await asyncio.sleep(0)
    _note()
    return x * 2


async def broken():
    await asyncio.sleep(0)
    _note()
    raise ValueError("no")


def count(n):
    for i in range(n):
        _note()
        yield i
    return "done"


async def stream(n):
    for i in range(n):
        await asyncio.sleep(0)
        _note()
        yield i
'''

BODYHOOK = '''
from ddagent.hooks.registry import FunctionProbe, Integration

def on_call(integration, *params):
    return integration.start_span(None, "body.call", span_type="toy")

integration = Integration(
    "bodytoy",
    service="body-service",
    probes=[FunctionProbe("bodylib", name, on_call=on_call)
            for name in ("fetch", "broken", "count", "stream")],
)
'''


@pytest.fixture(params=["rewrite", "wrapt fallback"])
def bodylib(request, tmp_path, monkeypatch):
    """The ``bodytoy`` integration enabled on ``bodylib``, by either probing mechanism."""
    if request.param == "wrapt fallback":
        monkeypatch.setattr(rewrite, "SUPPORTED", False)
    elif not rewrite.SUPPORTED:
        pytest.skip("this interpreter cannot be rewritten")
    (tmp_path / "bodylib.py").write_text(textwrap.dedent(BODYLIB))
    (tmp_path / "bodyhook.py").write_text(textwrap.dedent(BODYHOOK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "bodytoy", ("bodyhook", "bodylib"))
    import bodylib

    probes.enable("bodytoy")
    if request.param == "wrapt fallback":
        assert isinstance(vars(bodylib)["fetch"], wrappers._ProbeWrapper)
    yield bodylib
    probes.disable("bodytoy")
    del registry._LOADED["bodytoy"]
    for name in ("bodylib", "bodyhook"):
        sys.modules.pop(name, None)


@pytest.fixture
def written():
    writer = ListWriter()
    tracer.writer = writer
    return writer.spans


def test_a_coroutine_span_lasts_until_it_is_awaited_to_the_end(bodylib, written):
    assert asyncio.run(bodylib.fetch(21)) == 42
    assert bodylib.SEEN == ["body.call"]
    [span] = written
    assert (span.name, span.error) == ("body.call", 0)


def test_a_coroutine_that_raises_marks_its_span(bodylib, written):
    with pytest.raises(ValueError, match="no"):
        asyncio.run(bodylib.broken())
    [span] = written
    assert (span.error, span.meta["error.type"]) == (1, "builtins.ValueError")


def test_a_generator_span_covers_every_item(bodylib, written):
    generator = bodylib.count(3)
    assert written == []  # nothing runs before the first next()
    assert list(generator) == [0, 1, 2]
    assert bodylib.SEEN == ["body.call"] * 3
    assert len(written) == 1


def test_an_async_generator_span_covers_every_item_and_ends_on_close(bodylib, written):
    async def take_two() -> list:
        items = []
        stream = bodylib.stream(5)
        async for item in stream:
            items.append(item)
            if len(items) == 2:
                break
        await stream.aclose()
        return items

    assert asyncio.run(take_two()) == [0, 1]
    assert bodylib.SEEN == ["body.call"] * 2
    [span] = written
    assert span.error == 0  # closing early is not an error
