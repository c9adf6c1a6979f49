"""The import finder: callbacks after watched imports, and nothing else changes."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import inspect
import itertools
import pkgutil
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest

from ddagent.hooks import finder
from ddagent.stats import STATS

_counter = itertools.count()


class Fixture:
    """Writes throwaway packages under a sys.path entry; forgets them and their hooks after."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hooks: list[tuple[str, object]] = []

    def unique(self, stem: str) -> str:
        return f"{stem}_{next(_counter)}"

    def write(self, relative: str, source: str = "") -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def watch(self, name: str) -> list[ModuleType]:
        """Register a recording callback for ``name``; returns the list it appends to."""
        seen: list[ModuleType] = []
        self.register(name, seen.append)
        return seen

    def register(self, name: str, callback) -> None:
        finder.when_imported(name, callback)
        self.hooks.append((name, callback))

    def cleanup(self) -> None:
        for name, callback in self.hooks:
            finder.unregister(name, callback)
        for name in [m for m in sys.modules if m.split(".")[0].startswith("fx_")]:
            del sys.modules[name]


@pytest.fixture
def fx(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    fixture = Fixture(tmp_path)
    yield fixture
    fixture.cleanup()


def test_finder_is_installed_once_at_the_front(fx):
    fx.watch(fx.unique("fx_a"))
    fx.watch(fx.unique("fx_b"))
    assert sys.meta_path[0] is finder._FINDER
    assert sys.meta_path.count(finder._FINDER) == 1


def test_unwatched_imports_are_not_touched(fx):
    fx.watch(fx.unique("fx_other"))
    name = fx.unique("fx_plain")
    fx.write(f"{name}.py", "X = 1\n")
    assert finder._FINDER.find_spec(name) is None
    module = importlib.import_module(name)
    assert type(module.__spec__.loader) is importlib.machinery.SourceFileLoader


def test_callback_runs_after_the_module_body_with_real_loader(fx):
    name = fx.unique("fx_mod")
    fx.write(f"{name}.py", "VALUE = 42\nLOADER_IN_BODY = type(__loader__).__name__\n")
    observed = []

    def record(m):
        observed.append((m.VALUE, type(m.__loader__), type(m.__spec__.loader)))

    fx.register(name, record)

    module = importlib.import_module(name)

    loader_type = importlib.machinery.SourceFileLoader
    assert observed == [(42, loader_type, loader_type)]
    assert module.LOADER_IN_BODY == "SourceFileLoader"
    assert type(module.__loader__) is loader_type
    assert module.__spec__.loader is module.__loader__
    assert type(module.__spec__) is importlib.machinery.ModuleSpec
    assert name in finder.watched()


def test_spec_found_before_import_looks_like_the_real_one(fx):
    name = fx.unique("fx_early")
    path = fx.write(f"{name}.py", "")
    fx.watch(name)
    spec = importlib.util.find_spec(name)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert spec.loader.get_filename(name) == str(path)


def test_resources_data_source_and_submodules_keep_working(fx):
    pkg = fx.unique("fx_pkg")
    fx.write(f"{pkg}/__init__.py", "def f():\n    return 1\n")
    fx.write(f"{pkg}/data.txt", "payload")
    fx.write(f"{pkg}/sub.py", "Y = 2\n")
    seen_pkg = fx.watch(pkg)
    seen_sub = fx.watch(f"{pkg}.sub")

    module = importlib.import_module(pkg)
    sub = importlib.import_module(f"{pkg}.sub")

    assert seen_pkg == [module] and seen_sub == [sub]
    assert (importlib.resources.files(pkg) / "data.txt").read_text() == "payload"
    assert pkgutil.get_data(pkg, "data.txt") == b"payload"
    assert inspect.getsource(module.f) == "def f():\n    return 1\n"


def test_reload_runs_the_callbacks_again(fx):
    name = fx.unique("fx_reload")
    fx.write(f"{name}.py", "def f():\n    return 1\n")
    seen = fx.watch(name)
    module = importlib.import_module(name)
    first_f = module.f

    reloaded = importlib.reload(module)

    assert reloaded is module and seen == [module, module]
    assert module.f is not first_f
    assert type(module.__spec__.loader) is importlib.machinery.SourceFileLoader
    assert module.__loader__ is module.__spec__.loader


def test_lazy_loader_fires_on_first_attribute_access(fx):
    name = fx.unique("fx_lazy")
    fx.write(f"{name}.py", "VALUE = 7\n")
    seen = fx.watch(name)

    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    assert seen == []

    assert module.VALUE == 7
    assert seen == [module]
    assert type(module.__spec__.loader) is importlib.machinery.SourceFileLoader
    assert type(module) is ModuleType


def test_namespace_package_imports_and_its_submodules_are_watched(fx):
    ns = fx.unique("fx_ns")
    fx.write(f"{ns}/concrete.py", "Z = 3\n")
    seen_ns = fx.watch(ns)
    seen_sub = fx.watch(f"{ns}.concrete")

    package = importlib.import_module(ns)
    concrete = importlib.import_module(f"{ns}.concrete")

    assert list(package.__path__) == [str(fx.root / ns)]
    assert seen_ns == []  # no code to patch in a namespace package: watch the submodules
    assert seen_sub == [concrete] and concrete.Z == 3


def test_already_imported_module_fires_at_once(fx):
    name = fx.unique("fx_before")
    fx.write(f"{name}.py", "")
    module = importlib.import_module(name)
    seen = fx.watch(name)
    assert seen == [module]
    fx.register(name, seen.append)  # the same callback again: no-op
    assert seen == [module]


RECORD: list[ModuleType] = []


def test_callback_registered_while_the_module_imports_fires_once_at_its_end(fx):
    name = fx.unique("fx_self")
    fx.write(
        f"{name}.py",
        """
        from ddagent.hooks import finder
        from tests.hooks.test_finder import RECORD
        finder.when_imported(__name__, RECORD.append)  # half-initialized: not fired here
        """,
    )
    fx.watch(name)  # some callback was registered before the import started
    RECORD.clear()
    try:
        module = importlib.import_module(name)
    finally:
        finder.unregister(name, RECORD.append)
    assert RECORD == [module]


def test_reentrant_callback_importing_another_watched_module(fx):
    first, second = fx.unique("fx_first"), fx.unique("fx_second")
    fx.write(f"{first}.py", "")
    fx.write(f"{second}.py", "")
    order = []
    fx.register(first, lambda m: (order.append(first), importlib.import_module(second)))
    fx.register(second, lambda m: order.append(second))
    importlib.import_module(first)
    assert order == [first, second]


def test_callback_errors_are_swallowed_and_counted(fx, caplog):
    name = fx.unique("fx_err")
    fx.write(f"{name}.py", "OK = True\n")

    def broken(module):
        raise RuntimeError("integration bug")

    fx.register(name, broken)
    seen = fx.watch(name)
    before = STATS.get("import_hooks.errors")

    module = importlib.import_module(name)

    assert module.OK and seen == [module]
    assert STATS.get("import_hooks.errors") == before + 1
    assert "integration bug" in caplog.text


def test_module_body_errors_propagate_and_skip_callbacks(fx):
    name = fx.unique("fx_raise")
    fx.write(f"{name}.py", "raise ValueError('in body')\n")
    seen = fx.watch(name)
    with pytest.raises(ValueError, match="in body"):
        importlib.import_module(name)
    assert seen == [] and name not in sys.modules


def test_eight_threads_importing_at_once_fire_once(fx):
    name = fx.unique("fx_threads")
    fx.write(f"{name}.py", "import time\nfor _ in range(1000):\n    time.sleep(0)\n")
    seen = fx.watch(name)
    barrier = threading.Barrier(8)
    results: list[ModuleType] = []

    def worker():
        barrier.wait()
        results.append(importlib.import_module(name))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(m is results[0] for m in results)
    assert seen == [results[0]]


def test_unregister_stops_callbacks_and_empties_the_watch_list(fx):
    name = fx.unique("fx_unreg")
    fx.write(f"{name}.py", "")
    seen: list[ModuleType] = []
    finder.when_imported(name, seen.append)
    finder.unregister(name, seen.append)
    importlib.import_module(name)
    assert seen == [] and name not in finder.watched()


def test_a_finder_that_calls_find_spec_does_not_recurse(fx):
    name = fx.unique("fx_recursive")
    fx.write(f"{name}.py", "")
    seen = fx.watch(name)

    class Meddler:  # like wrapt's finder: re-enters the import system, with its own guard
        busy = False

        def find_spec(self, fullname, path=None, target=None):
            if fullname == name and not self.busy:
                self.busy = True
                try:
                    importlib.util.find_spec(fullname)
                finally:
                    self.busy = False
            return None

    meddler = Meddler()
    sys.meta_path.insert(1, meddler)
    try:
        module = importlib.import_module(name)
    finally:
        sys.meta_path.remove(meddler)
    assert seen == [module]
