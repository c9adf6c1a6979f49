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

TOYLIB = '''
def work(x):
    return x + 1
'''

TOYHOOK = '''
from ddagent.hooks.registry import FunctionProbe, Integration

integration = Integration(
    "reenabletoy",
    service="cache-service",
    probes=[FunctionProbe("reenable_toylib", "work",
                          on_call=lambda integration, x: integration.start_span(None, "w"))],
)
'''


@pytest.fixture
def reenable_toylib(tmp_path, monkeypatch):
    if not rewrite.SUPPORTED:
        pytest.skip("this interpreter cannot be rewritten")
    (tmp_path / "reenable_toylib.py").write_text(textwrap.dedent(TOYLIB))
    (tmp_path / "reenable_toyhook.py").write_text(textwrap.dedent(TOYHOOK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "reenabletoy",
                        ("reenable_toyhook", "reenable_toylib"))
    import reenable_toylib

    yield reenable_toylib
    probes.disable("reenabletoy")
    del registry._LOADED["reenabletoy"]
    for name in ("reenable_toylib", "reenable_toyhook"):
        sys.modules.pop(name, None)


def test_enable_disable_enable_reuses_the_rewritten_code(reenable_toylib):
    original = reenable_toylib.work.__code__
    probes.enable("reenabletoy")
    rewritten = reenable_toylib.work.__code__
    assert rewritten is not original
    probes.disable("reenabletoy")
    assert reenable_toylib.work.__code__ is original
    probes.enable("reenabletoy")
    assert reenable_toylib.work.__code__ is rewritten
    assert reenable_toylib.work(1) == 2
