"""Enabling an integration again after disabling it reuses the rewritten code object.

The rewriter caches rewritten code per (original code, probe callables) and keeps a few
variants per code object; the registry hands it the same callables on every enable of a
FunctionProbe, so enable -> disable -> enable costs no second rewrite."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ddagent import probes
from ddagent.hooks import registry, rewrite

CACHELIB = '''
def work(x):
    return x + 1
'''

CACHEHOOK = '''
from ddagent.hooks.registry import FunctionProbe, Integration

integration = Integration(
    "cachetoy",
    service="cache-service",
    probes=[FunctionProbe("cachelib", "work",
                          on_call=lambda integration, x: integration.start_span(None, "w"))],
)
'''


@pytest.fixture
def cachelib(tmp_path, monkeypatch):
    if not rewrite.SUPPORTED:
        pytest.skip("this interpreter cannot be rewritten")
    (tmp_path / "cachelib.py").write_text(textwrap.dedent(CACHELIB))
    (tmp_path / "cachehook.py").write_text(textwrap.dedent(CACHEHOOK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "cachetoy", ("cachehook", "cachelib"))
    import cachelib

    yield cachelib
    probes.disable("cachetoy")
    del registry._LOADED["cachetoy"]
    for name in ("cachelib", "cachehook"):
        sys.modules.pop(name, None)


def test_enable_disable_enable_reuses_the_rewritten_code(cachelib):
    original = cachelib.work.__code__
    probes.enable("cachetoy")
    rewritten = cachelib.work.__code__
    assert rewritten is not original
    probes.disable("cachetoy")
    assert cachelib.work.__code__ is original
    probes.enable("cachetoy")
    assert cachelib.work.__code__ is rewritten
    assert cachelib.work(1) == 2
