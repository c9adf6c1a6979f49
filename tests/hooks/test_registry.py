"""The probe registry on a throwaway library: install on import, MRO, class/static methods,
disable/enable identity, guarded probes, the wrapt fallback, and patch()/patch_all() semantics."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap

import pytest

from ddagent import probes
from ddagent.hooks import registry, rewrite, wrappers
from ddagent.hooks.registry import PatchError
from ddagent.stats import STATS
from ddagent.tracer import tracer
from tests.listwriter import ListWriter

TOYLIB = '''
class Base:
    def call(self, x, *rest, scale=1, **extra):
        return x * 2 * scale

class Client(Base):
    @classmethod
    def build(cls, name):
        return f"{cls.__name__}:{name}"

    @staticmethod
    def double(x):
        return x * 2

    def fail(self):
        raise KeyError("missing")
'''

TOYHOOK = '''
from ddagent.hooks.registry import FunctionProbe, Integration

CALLS = []

def on_call(integration, *params):
    CALLS.append(params)
    return integration.start_span(params[0], "toy.call", resource="call", span_type="toy")

def on_return(span, result, *params):
    span.set_metric("toy.result", result)

def positive(params):
    return params[0] > 0

integration = Integration(
    "toy",
    service="toy-service",
    probes=[
        FunctionProbe("toylib", "Client.call", on_call=on_call, on_return=on_return),
        FunctionProbe("toylib", "Client.build", on_call=on_call),
        FunctionProbe("toylib", "Client.double", on_call=on_call, only_if=positive),
        FunctionProbe("toylib", "Client.fail", on_call=on_call),
    ],
)
'''


@pytest.fixture
def written():
    writer = ListWriter()
    tracer.writer = writer
    return writer.spans


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Registers the "toy" integration (hook module ``toyhook`` for library ``toylib``)."""
    (tmp_path / "toylib.py").write_text(textwrap.dedent(TOYLIB))
    (tmp_path / "toyhook.py").write_text(textwrap.dedent(TOYHOOK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "toy", ("toyhook", "toylib"))
    yield
    if "toy" in registry._LOADED:
        probes.disable("toy")
        del registry._LOADED["toy"]
    for name in ("toylib", "toyhook"):
        sys.modules.pop(name, None)


def test_patch_before_import_instruments_on_import(toy, written):
    registry.patch(toy=True)
    assert "toylib" not in sys.modules  # nothing imported eagerly
    import toylib

    assert toylib.Client().call(3, 4, scale=5, flag=True) == 30
    [span] = written
    assert (span.name, span.service, span.resource, span.span_type) == (
        "toy.call", "toy-service", "call", "toy")
    assert span.meta["component"] == "toy"
    assert span.metrics["toy.result"] == 30
    # The parameters come as: self, x, scale (keyword-only), then *rest and **extra.
    [params] = sys.modules["toyhook"].CALLS
    assert params[1:] == (3, 5, (4,), {"flag": True})


def test_a_method_is_probed_where_it_is_defined(toy, written):
    import toylib

    original = toylib.Base.call.__code__
    probes.enable("toy")
    assert toylib.Base.call.__code__ is not original  # Client inherits it from Base
    assert toylib.Base().call(1) == 2  # so Base instances are traced too
    assert len(written) == 1


def test_classmethod_and_staticmethod(toy, written):
    import toylib

    probes.enable("toy")
    assert toylib.Client.build("a") == "Client:a"
    assert toylib.Client().double(4) == 8
    assert [s.name for s in written] == ["toy.call", "toy.call"]


def test_disable_restores_the_original_code_and_enable_reapplies(toy, written):
    import toylib

    originals = {n: rewrite.original_code(rewrite.underlying_function(vars(k)[n]))
                 for k, n in [(toylib.Base, "call"), (toylib.Client, "build"),
                              (toylib.Client, "double"), (toylib.Client, "fail")]}
    probes.enable("toy")
    probes.disable("toy")
    assert toylib.Base.call.__code__ is originals["call"]
    assert toylib.Client.build.__func__.__code__ is originals["build"]
    assert toylib.Client.double.__code__ is originals["double"]
    assert toylib.Client.fail.__code__ is originals["fail"]
    toylib.Client().call(1)
    assert written == []

    probes.enable("toy")
    toylib.Client().call(1)
    assert len(written) == 1


def test_exceptions_reach_the_app_and_mark_the_span(toy, written):
    import toylib

    probes.enable("toy")
    with pytest.raises(KeyError, match="missing") as info:
        toylib.Client().fail()
    assert info.traceback[-1].name == "fail"
    [span] = written
    assert span.error == 1
    assert span.meta["error.type"] == "builtins.KeyError"


def test_a_raising_probe_is_caught_counted_and_disables(toy, written, caplog):
    import toylib

    probes.enable("toy")
    sys.modules["toyhook"].CALLS = None  # the probe now raises AttributeError
    before = STATS.get("probes.errors.toy")
    with caplog.at_level(logging.ERROR, logger="ddagent.hooks.registry"):
        assert toylib.Client().call(2) == 4
    assert STATS.get("probes.errors.toy") == before + 1
    assert "toy probe failed" in caplog.text
    [row] = [r for r in probes.status() if r["name"] == "toy"]
    assert (row["enabled"], row["instrumented"], row["errors"]) == (False, False, before + 1)
    assert not rewrite.is_instrumented(toylib.Base.call)
    assert written == []


def test_the_wrapt_fallback_has_the_same_behaviour(toy, written, monkeypatch, caplog):
    monkeypatch.setattr(rewrite, "SUPPORTED", False)
    monkeypatch.setattr(wrappers, "_fallback_noted", False)
    import toylib

    raw = {n: vars(toylib.Base if n == "call" else toylib.Client)[n]
           for n in ("call", "build", "double", "fail")}
    with caplog.at_level(logging.INFO, logger="ddagent.hooks.wrappers"):
        probes.enable("toy")
    assert caplog.text.count("using wrapt wrappers") == 1
    assert toylib.Client().call(3, scale=2) == 12
    assert toylib.Client.build("b") == "Client:b"
    assert toylib.Client.double(5) == 10
    with pytest.raises(KeyError):
        toylib.Client().fail()
    assert [s.error for s in written] == [0, 0, 0, 1]
    assert sys.modules["toyhook"].CALLS[0][1:] == (3, 2, (), {})

    probes.disable("toy")
    assert vars(toylib.Base)["call"] is raw["call"]
    assert all(vars(toylib.Client)[n] is raw[n] for n in ("build", "double", "fail"))


def test_only_if_turns_calls_down_before_the_probe(toy, written):
    import toylib

    probes.enable("toy")
    hook = sys.modules["toyhook"]
    assert toylib.Client.double(-1) == -2
    assert (hook.CALLS, written) == ([], [])  # on_call did not run
    assert toylib.Client.double(3) == 6
    assert hook.CALLS == [(3,)]
    assert len(written) == 1
    before = STATS.get("probes.errors.toy")
    assert toylib.Client.double("ab") == "abab"  # only_if raises TypeError: a probe error
    assert STATS.get("probes.errors.toy") == before + 1
    assert len(written) == 1


def test_tracer_disabled_means_pass_through(toy, written, monkeypatch):
    import toylib

    probes.enable("toy")
    monkeypatch.setattr(tracer, "enabled", False)
    assert toylib.Client().call(1) == 2
    assert written == []


def test_patch_errors(monkeypatch):
    # A known name whose hook module is not written yet.
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "futurelib", (None, "futurelib"))
    with pytest.raises(PatchError, match="unknown integration 'nosuch'.*redis.*sqlite3"):
        registry.patch(nosuch=True)
    with pytest.raises(PatchError, match="futurelib integration is not implemented yet"):
        registry.patch(raise_errors=True, futurelib=True)
    with pytest.raises(PatchError, match="unknown integration"):
        probes.enable("nosuch")
    registry.patch(raise_errors=False, nosuch=True, futurelib=True)  # logged, not raised


def test_patch_raises_when_the_library_is_missing(toy, monkeypatch):
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "toy", ("toyhook", "toylib_not_installed"))
    with pytest.raises(PatchError, match="cannot patch toy: the library is not installed"):
        registry.patch(toy=True)


def test_the_installed_check_imports_no_package_of_the_library(tmp_path, monkeypatch):
    # A library named "package.module" (mysql.connector) is looked up without importing the
    # package: that would run the application's code before the application does.
    package = tmp_path / "toypkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported too early')\n")
    (package / "client.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry._module_installed("toypkg.client")
    assert not registry._module_installed("toypkg.missing")
    assert not registry._module_installed("nosuchpkg.client")
    assert "toypkg" not in sys.modules


def test_patch_false_does_nothing(toy):
    registry.patch(toy=False)
    assert "toy" not in registry._LOADED


@pytest.fixture
def patch_all_cleanup():
    yield
    registry.unpatch()


def enabled_names() -> set[str]:
    return {r["name"] for r in probes.status() if r["enabled"]}


def test_patch_all_defaults(toy, patch_all_cleanup):
    registry.patch_all()
    assert {"redis", "sqlite3", "toy"} <= enabled_names()
    assert "sqlalchemy" not in enabled_names()
    assert registry.get_patched_modules() == sorted(enabled_names())


def test_patch_all_overrides_then_env(toy, patch_all_cleanup, monkeypatch):
    registry.patch_all(toy=False, redis=False)
    assert {"toy", "redis"}.isdisjoint(enabled_names())
    registry.unpatch()

    monkeypatch.setenv("DD_PATCH_MODULES", "redis:false, toy:true")
    monkeypatch.setenv("DD_TRACE_SQLITE3_ENABLED", "false")
    registry.patch_all(toy=False)
    assert "toy" in enabled_names()
    assert {"redis", "sqlite3"}.isdisjoint(enabled_names())


def test_malformed_env_values_warn_once_and_are_ignored(toy, patch_all_cleanup, monkeypatch,
                                                       caplog):
    monkeypatch.setenv("DD_PATCH_MODULES", "redis=false,toy:maybe,sqlite3:false")
    monkeypatch.setenv("DD_TRACE_TOY_ENABLED", "nope")
    with caplog.at_level(logging.WARNING, logger="ddagent.hooks.registry"):
        registry.patch_all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "DD_PATCH_MODULES" in warnings[0] and "'redis=false'" in warnings[0]
    assert "'name:true,name:false'" in warnings[0]
    assert "DD_TRACE_TOY_ENABLED='nope'" in warnings[1]
    assert "redis" in enabled_names() and "toy" in enabled_names()  # defaults kept
    assert "sqlite3" not in enabled_names()  # the well-formed entry applies


def test_status_lists_every_seed_library(monkeypatch):
    monkeypatch.setitem(registry.KNOWN_INTEGRATIONS, "futurelib", (None, "futurelib"))
    sqlite3 = importlib.import_module("sqlite3")
    rows = {r["name"]: r for r in probes.status()}
    seed = {"django", "pylons", "falcon", "flask", "cassandra", "elasticsearch", "flask_cache",
            "mongoengine", "pymongo", "pylibmc", "mysql", "psycopg", "redis", "sqlalchemy",
            "sqlite3", "requests", "urllib3", "bottle"}
    assert seed <= set(rows)
    for row in rows.values():
        assert set(row) == {"name", "module", "installed", "version", "implemented", "enabled",
                            "instrumented", "errors"}
    assert rows["redis"]["implemented"] and rows["redis"]["installed"]
    assert not rows["futurelib"]["implemented"] and not rows["futurelib"]["installed"]
    assert rows["sqlite3"]["version"] == sqlite3.sqlite_version


def test_start_span_tags_presets_then_call_tags_then_pin_tags(written):
    from ddagent.hooks.registry import Integration
    from ddagent.pin import Pin

    class Target:
        pass

    integration = Integration("toy", service="toy-service", probes=[])
    preset = integration.span_tags({"peer": "db1", "port_text": 5432, "gone": None},
                                   {"port": 5432, "nan": float("nan"), "text": "x", "none": None})
    assert preset.meta == {"component": "toy", "span.kind": "client", "peer": "db1",
                           "port_text": "5432"}
    assert preset.metrics == {"_dd.measured": 1.0, "port": 5432.0}
    assert all(type(v) is float for v in preset.metrics.values())

    target = Target()
    Pin.override(target, service="pinned", tags={"peer": "from-pin"})
    span = integration.start_span(target, "toy.call", preset=preset,
                                  tags={"call": "a", "n": 3, "skip": None},
                                  metrics={"rows": 2, "f": 1.5, "inf": float("inf"), "s": None})
    # Read before finish(): a finished root also carries the trace's own tags.
    assert span.service == "pinned"
    assert span.meta == {"component": "toy", "span.kind": "client", "peer": "from-pin",
                         "port_text": "5432", "call": "a", "n": "3"}
    assert span.metrics == {"_dd.measured": 1.0, "port": 5432.0, "rows": 2.0, "f": 1.5}
    span.finish()

    plain = integration.start_span(Target(), "toy.call")  # no Pin, no preset: the defaults
    assert plain.service == "toy-service"
    assert plain.meta == {"component": "toy", "span.kind": "client"}
    assert plain.metrics == {"_dd.measured": 1.0}
    plain.finish()


def test_start_span_respects_a_disabled_pin_tracer(written):
    from ddagent.hooks.registry import Integration
    from ddagent.pin import Pin
    from ddagent.tracer import Tracer

    class Target:
        pass

    integration = Integration("toy", service="toy-service", probes=[])
    other = Tracer()
    other.enabled = False
    target = Target()
    Pin.override(target, tracer=other)
    assert integration.start_span(target, "toy.call") is None
