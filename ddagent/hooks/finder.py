"""Run callbacks right after watched modules are imported (or re-imported by ``importlib.reload``).

One finder sits at ``sys.meta_path[0]``. For a module name nobody watches, ``find_spec`` is a
dict miss and the import goes on untouched. For a watched name it asks the *other* finders for
the spec itself and swaps the spec's loader for a thin stand-in whose ``exec_module`` puts the
real loader back on the module and its spec, runs the real ``exec_module`` and then the
callbacks. The module therefore executes, and ends up, with exactly the spec and loader it would
have had without us (``importlib.resources``, ``pkgutil.get_data``, ``inspect.getsource`` and
``LazyLoader`` all see the real loader).

Why the other finders are asked directly rather than through ``importlib.util.find_spec``: that
would re-enter the import system and take per-module locks from inside a finder, which can
deadlock two threads importing two modules in opposite orders. A thread-local set stops a finder
further down the chain that itself calls ``find_spec`` from recursing back into us.

Not watched, by design: namespace packages (no loader before 3.11, a ``NamespaceLoader`` after,
and no code to patch anyway: watch their concrete submodules), and modules whose loader has no
``exec_module`` (pre-PEP 451 loaders): their imports proceed untouched and their callbacks do not
run.
"""

from __future__ import annotations

import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

from ddagent._logging import WARNING, RateLimitedLog, get_logger
from ddagent.stats import STATS

Callback = Callable[[ModuleType], None]

_log = RateLimitedLog(get_logger(__name__))

# module name -> callbacks, in registration order. Read without the lock on the import path
# (dict lookups are atomic); changed only under _lock, always by replacing the list.
_callbacks: dict[str, list[Callback]] = {}
_lock = threading.Lock()
_state = threading.local()  # .finding: names this thread is resolving right now


class _WatchedLoader:
    """Stands in for a watched module's real loader between ``find_spec`` and ``exec_module``.

    Everything but ``create_module``/``exec_module`` is forwarded to the real loader, and
    ``__class__`` reports the real loader's class, so code that inspects a spec obtained from
    ``importlib.util.find_spec`` before the import (``isinstance(spec.loader, SourceFileLoader)``,
    ``spec.loader.get_filename()``) sees what it would see without us.
    """

    def __init__(self, name: str, loader: Any) -> None:
        self._name = name
        self._loader = loader

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._loader)

    def __getattr__(self, attr: str) -> Any:
        if attr == "_loader":  # not set yet (copy, unpickling): don't recurse
            raise AttributeError(attr)
        return getattr(self._loader, attr)

    def __repr__(self) -> str:
        return repr(self._loader)

    def create_module(self, spec: ModuleSpec) -> Optional[ModuleType]:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back *before* the module body runs, so that code in the body
        # that looks at its own __loader__/__spec__ sees the usual objects.
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        # A module may replace itself in sys.modules; importers get that object, so do we.
        module = sys.modules.get(self._name, module)
        _run_callbacks(self._name, list(_callbacks.get(self._name, ())), module)


class _WatchingFinder:
    """The ``sys.meta_path`` entry; see the module docstring."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]] = None,
        target: Optional[ModuleType] = None,
    ) -> Optional[ModuleSpec]:
        if fullname not in _callbacks:
            return None
        finding = getattr(_state, "finding", None)
        if finding is None:
            finding = _state.finding = set()
        if fullname in finding:
            return None
        finding.add(fullname)
        try:
            spec = self._find_with_other_finders(fullname, path, target)
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or type(spec.loader) is _WatchedLoader:
            return spec
        if not hasattr(spec.loader, "exec_module") or _is_namespace_loader(spec.loader):
            return spec
        spec.loader = _WatchedLoader(fullname, spec.loader)
        return spec

    def _find_with_other_finders(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType]
    ) -> Optional[ModuleSpec]:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                # A legacy finder ahead in the chain: let the import system handle it as usual.
                return None
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def _is_namespace_loader(loader: Any) -> bool:
    return type(loader).__name__ in ("NamespaceLoader", "_NamespaceLoader")


_FINDER = _WatchingFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def _is_initializing(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run_callbacks(name: str, callbacks: list[Callback], module: ModuleType) -> None:
    for callback in callbacks:
        try:
            callback(module)
        except Exception:
            # Never break the application's import because an integration failed to install.
            STATS.incr("import_hooks.errors")
            _log.log(
                WARNING,
                f"callback:{name}",
                "ddagent: a callback for the import of %s failed; the module is left as imported",
                name,
                exc_info=True,
            )


def when_imported(module_name: str, callback: Callback) -> None:
    """Run ``callback(module)`` right after ``module_name`` executes, and again after each reload.

    If the module is already fully imported, the callback runs at once, in this thread. A module
    being imported right now (half-initialized) is caught when its import completes, provided its
    spec was found after a callback for it was registered. Registering the same callback for the
    same name twice is a no-op. Callback errors are logged rate-limited and swallowed.
    """
    with _lock:
        registered = _callbacks.get(module_name, [])
        if callback in registered:
            return
        _callbacks[module_name] = [*registered, callback]
        _install_finder()
    module = sys.modules.get(module_name)
    if module is not None and not _is_initializing(module):
        _run_callbacks(module_name, [callback], module)


def unregister(module_name: str, callback: Callback) -> None:
    """Stop running ``callback`` for ``module_name``; unknown pairs are ignored."""
    with _lock:
        remaining = [c for c in _callbacks.get(module_name, ()) if c != callback]
        if remaining:
            _callbacks[module_name] = remaining
        else:
            _callbacks.pop(module_name, None)


def watched() -> frozenset[str]:
    """The module names that have at least one callback."""
    return frozenset(_callbacks)
