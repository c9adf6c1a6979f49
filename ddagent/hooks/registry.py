"""How an integration is declared and run.

An integration module (``hooks/redis.py``, ``hooks/sqlite3.py``) builds one :class:`Integration`:
its name, its default service and component, and a list of probes. A probe names a function in a
library module and says how a call becomes a span:

- :class:`FunctionProbe` for Python functions: the function's code object is rewritten in place
  (``hooks/rewrite.py``), on the class that *defines* it, so references taken earlier are traced.
- :class:`ddagent.hooks.wrappers.WrapperProbe` for C callables, which have no code object: the
  module attribute is replaced by a ``wrapt`` wrapper.
- :class:`ddagent.hooks.wrappers.AroundProbe` for calls whose arguments or return value must be
  replaced, which code rewriting cannot do.

Everything else happens here, once for every integration:

- **Installing.** Enabling an integration registers ``finder.when_imported`` for each probe's
  module; the probe is installed when that module is imported (or at once if it already is).
  Each installation returns its own undo step; disabling runs the undo steps that enabling
  recorded, so there is no second, mirrored "unpatch" list to keep in sync.
- **Guarding.** Probe callables never raise into the application. An exception from one is
  caught, counted in ``STATS`` as ``probes.errors.<name>``, logged (rate-limited) and the whole
  integration is disabled.
- **Config at call time.** Whether to trace a call is decided when it happens: the integration
  switch, the Pin found on the instance (or its class), that Pin's tracer (else the global one)
  and whether it is enabled. The service is the Pin's, else ``DD_<NAME>_SERVICE``, else the
  integration's default.

The public entry points are :func:`patch`, :func:`patch_all`, :func:`unpatch` (re-exported by
``ddagent``), :func:`enable`, :func:`disable` and :func:`status` (re-exported by
``ddagent.probes``). They are safe to call from any thread at any time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from ddagent._logging import DEBUG, ERROR, WARNING, RateLimitedLog, get_logger
from ddagent.config import env_bool, parse_switches
from ddagent.context import ACTIVE_SPAN
from ddagent.hooks import finder
from ddagent.pin import PIN_ATTR
from ddagent.span import PythonSpanCore
from ddagent.stats import STATS

log = get_logger(__name__)
_isfinite = math.isfinite
_rate_limited = RateLimitedLog(log)

Undo = Callable[[], None]
OnCall = Callable[..., Any]  # on_call(integration, *params) -> Span | None
OnReturn = Callable[..., None]  # on_return(span, result, *params)


# Every library name the seed's patch()/patch_all() accepted, with the hook module that
# implements it (None: not implemented yet) and the module whose presence means "installed"
# (several, comma-separated, when one name covers alternative libraries: psycopg2 or psycopg 3).
KNOWN_INTEGRATIONS: dict[str, tuple[Optional[str], str]] = {
    "bottle": (None, "bottle"),
    "cassandra": ("ddagent.hooks.cassandra", "cassandra"),
    "django": ("ddagent.hooks.django", "django"),
    "elasticsearch": ("ddagent.hooks.elasticsearch", "elasticsearch"),
    "falcon": ("ddagent.hooks.falcon", "falcon"),
    "flask": ("ddagent.hooks.flask", "flask"),
    "flask_cache": ("ddagent.hooks.flask_caching", "flask_caching,flask_cache"),
    "mongoengine": ("ddagent.hooks.mongoengine", "mongoengine"),
    "mysql": ("ddagent.hooks.mysql", "mysql.connector"),
    "mysqldb": ("ddagent.hooks.mysqldb", "MySQLdb"),
    "psycopg": ("ddagent.hooks.psycopg", "psycopg2,psycopg"),
    "pylibmc": ("ddagent.hooks.pylibmc", "pylibmc"),
    "pylons": ("ddagent.hooks.pylons", "pylons"),
    "pyramid": ("ddagent.hooks.pyramid", "pyramid"),
    "pymongo": ("ddagent.hooks.pymongo", "pymongo"),
    "pymysql": ("ddagent.hooks.pymysql", "pymysql"),
    "redis": ("ddagent.hooks.redis", "redis"),
    "requests": ("ddagent.hooks.requests", "requests"),
    "sqlalchemy": ("ddagent.hooks.sqlalchemy", "sqlalchemy"),
    "sqlite3": ("ddagent.hooks.sqlite3", "sqlite3"),
    "urllib3": ("ddagent.hooks.urllib3", "urllib3"),
}

# patch_all() turns everything on except these (SQLAlchemy: prefer the DB driver's spans).
OFF_BY_DEFAULT = frozenset({"sqlalchemy"})

class PatchError(Exception):
    """An integration cannot be patched: unknown name, no hook yet, or library not installed."""


class Probe(Protocol):
    """What the registry needs from a probe declaration."""

    module: str  # the module whose import triggers install()

    def install(self, module: ModuleType, integration: Integration) -> Undo | None:
        """Instrument ``module``; return how to undo it (None: nothing was done)."""


class SpanTags:
    """Tags and metrics converted to their wire types (str, finite float) once, to be copied
    onto many spans with one ``dict.update`` each (see :meth:`Integration.start_span`)."""

    __slots__ = ("meta", "metrics")

    def __init__(self) -> None:
        self.meta: dict[str, str] = {}
        self.metrics: dict[str, float] = {}

    def update(self, tags: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None) -> None:
        """Add ``tags`` and ``metrics`` (None values skipped), converted by a span's own
        ``set_tag`` and ``set_metric`` (the Python ones: they only touch ``meta`` and
        ``metrics``, which a SpanTags has too), so a preset keeps exactly what a span would (or
        drops it, logged)."""
        for key, value in (tags or {}).items():
            if value is not None:
                PythonSpanCore.set_tag(self, key, value)  # type: ignore[arg-type]
        for key, value in (metrics or {}).items():
            if value is not None:
                PythonSpanCore.set_metric(self, key, value)  # type: ignore[arg-type]


class Integration:
    """One library's instrumentation: its probes and how its spans are named and tagged.

    ``name`` is the ``patch()`` keyword; ``service`` the default service of its spans;
    ``component`` the ``component`` tag (defaults to ``name``); ``span_kind`` the ``span.kind``
    tag.
    """

    def __init__(
        self,
        name: str,
        *,
        probes: Sequence[Probe],
        service: str,
        component: str | None = None,
        span_kind: str = "client",
    ) -> None:
        self.name = name
        self.probes = tuple(probes)
        self.service = service
        self.component = component or name
        self.span_kind = span_kind
        self._service_env_vars = tuple(
            dict.fromkeys(f"DD_{n.upper()}_SERVICE" for n in (name, self.component))
        )
        # The same names as os.environ stores them (bytes on POSIX), see configured_service.
        encode = getattr(os.environ, "encodekey", str)
        self._service_env_keys = tuple(map(encode, self._service_env_vars))
        # Read by every probe call without a lock: a plain bool flips atomically.
        self.enabled = False
        self._preset = self.span_tags()
        self._undo: list[Undo] = []
        self._watching = False

    def __repr__(self) -> str:
        return f"<Integration {self.name} enabled={self.enabled}>"

    @property
    def instrumented(self) -> bool:
        return bool(self._undo)

    # -- what probes call ------------------------------------------------------------------

    def start_span(
        self,
        pin_from: object,
        name: str,
        *,
        service: str | None = None,
        resource: str | None = None,
        span_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        preset: SpanTags | None = None,
    ) -> Any:
        """Start and activate this integration's span for a call on ``pin_from``.

        Returns None when the call must not be traced (the Pin or the tracer is disabled).
        ``service`` overrides the Pin's and the configured service (Django names its database
        spans after the connection alias). ``preset`` (from :meth:`span_tags`) holds the tags
        that are the same for every call on one client or connection; ``tags`` and ``metrics``
        the per-call ones, whose None values are skipped. A Pin's tags come last.
        """
        # Pin.get_from, Pin.enabled and global_tracer, inlined: three Python calls less per span.
        pin = getattr(pin_from, PIN_ATTR, None)
        if pin is None:
            get_pin = getattr(pin_from, "__getddpin__", None)
            if get_pin is not None:
                pin = get_pin()
        if pin is None:
            tracer = (_TRACER_MODULE or _tracer_module()).tracer
            if not tracer.enabled:
                return None
            if service is None:
                service = self.configured_service() or self.service
        else:
            tracer = pin.tracer
            if not tracer or not tracer.enabled:
                return None
            if service is None:
                service = pin.service or self.configured_service() or self.service
        span = tracer.trace(name, service=service, resource=resource, span_type=span_type)
        if preset is None:
            preset = self._preset
        # Already converted (str tags, float metrics): two dict updates, no set_tag per tag.
        span.meta.update(preset.meta)
        span.metrics.update(preset.metrics)
        if tags:
            meta = span.meta
            for key, value in tags.items():
                if type(value) is str:  # set_tag would store it as it is
                    meta[key] = value
                elif value is not None:
                    span.set_tag(key, value)
        if metrics:
            span_metrics = span.metrics
            for key, value in metrics.items():
                if type(value) is float and _isfinite(value):  # set_metric would keep it as is
                    span_metrics[key] = value
                elif value is not None:
                    span.set_metric(key, value)
        if pin is not None and pin.tags:
            for key, value in pin.tags.items():
                span.set_tag(key, value)
        return span

    def span_tags(self, tags: Mapping[str, Any] | None = None,
                  metrics: Mapping[str, Any] | None = None) -> SpanTags:
        """This integration's fixed tags (``component``, ``span.kind``, ``_dd.measured``) plus
        ``tags`` and ``metrics``, converted once, for :meth:`start_span`'s ``preset``.

        Values are converted as ``Span.set_tag``/``set_metric`` would; None values are skipped.
        """
        preset = SpanTags()
        preset.meta["component"] = self.component
        if self.span_kind:
            preset.meta["span.kind"] = self.span_kind
        preset.metrics["_dd.measured"] = 1.0
        preset.update(tags, metrics)
        return preset

    def start_child_span(self, name: str, *, resource: str | None = None,
                         span_type: str | None = None) -> Any:
        """Start and activate a sub-span of the active span (a framework's view, template,
        handler), with its parent's tracer and service; None outside an unfinished span.

        It carries only the ``component`` tag: the parent already has the request's tags.
        """
        # The active span itself, not global_tracer().current_span(): the same value, without
        # looking the tracer up on every sub-span.
        parent = ACTIVE_SPAN.get()
        if parent is None or parent.finished:
            return None
        tracer = parent.tracer
        if tracer is None:
            return None
        span = tracer.trace(name, resource=resource, span_type=span_type)
        span.meta["component"] = self.component  # a str: set_tag's conversion is not needed
        return span

    def configured_service(self) -> str | None:
        """The service that ``DD_<NAME>_SERVICE`` (or ``DD_<COMPONENT>_SERVICE``) names, if set."""
        # Read at every traced call (the environment may change at run time), so without
        # os.environ.get: that is four Python calls per variable (Mapping.get, __getitem__ and
        # the key/value codecs), ~1.5 us of the ~4 us a redis GET span adds (cProfile). The
        # environ's own store, keyed as encodekey() gives, holds exactly what .get() reads.
        environ = os.environ
        data = getattr(environ, "_data", None)
        if data is None:  # os.environ replaced by a plain mapping
            for name in self._service_env_vars:
                value = environ.get(name)
                if value:
                    return value
        else:
            for key in self._service_env_keys:
                value = data.get(key)
                if value:  # b"" decodes to "": skipped either way
                    return environ.decodevalue(value)
        return None

    # -- the guarded probe protocol (used by rewrite hooks, wrappers and dbapi proxies) -----

    def enter(self, on_call: OnCall, params: tuple) -> Any:
        """Run ``on_call(self, *params)``; return a token for :meth:`exit`, or None (untraced)."""
        if not self.enabled:
            return None
        active = ACTIVE_SPAN.get()
        try:
            span = on_call(self, *params)
        except Exception as exc:
            # A probe that started its span before failing must not leave it active: the app's
            # later spans would join a trace that never closes.
            ACTIVE_SPAN.set(active)
            self.probe_failed(exc)
            return None
        return None if span is None else (span, params)

    def exit(self, on_return: OnReturn | None, token: Any, result: Any,
             exc: BaseException | None) -> None:
        """Finish the span of ``token``: record ``exc``, or let ``on_return`` tag the result.

        ``on_return`` comes first so that a probe binds it positionally
        (``partial(integration.exit, on_return)``): a partial holding a keyword builds a dict
        per call (~1k instructions a probed call, callgrind)."""
        if token is None:
            return
        span, params = token
        try:
            if exc is not None:
                if not isinstance(exc, GeneratorExit):
                    span.set_exc_info(type(exc), exc, exc.__traceback__)
            elif on_return is not None:
                on_return(span, result, *params)
        except Exception as error:
            self.probe_failed(error)
        try:
            span.finish()
        except Exception as error:
            self.probe_failed(error)

    def probe_failed(self, exc: BaseException) -> None:
        """A probe raised: count it, log it (rate-limited) and switch this integration off."""
        STATS.incr(f"probes.errors.{self.name}")
        _rate_limited.log(
            ERROR, f"probe-error:{self.name}",
            "ddagent: the %s probe failed (%s: %s); %s instrumentation is now disabled",
            self.name, type(exc).__name__, exc, self.name, exc_info=True,
        )
        try:
            disable(self.name)
        except Exception:  # never let the clean-up escape into the application either
            log.debug("disabling %s after a probe error failed", self.name, exc_info=True)

    # -- installation (called with _LOCK held) ----------------------------------------------

    def _install(self, probe: Probe, module: ModuleType) -> None:
        if not self.enabled:
            return
        try:
            undo = probe.install(module, self)
        except Exception:
            STATS.incr(f"probes.errors.{self.name}")
            _rate_limited.log(WARNING, f"install:{self.name}:{probe.module}",
                              "ddagent: could not instrument %s for %s", probe.module, self.name,
                              exc_info=True)
            return
        if undo is not None:
            self._undo.append(undo)

    def _uninstall(self) -> None:
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            try:
                step()
            except Exception:
                log.warning("ddagent: could not restore part of %s", self.name, exc_info=True)


class FunctionProbe:
    """Probe a Python function or method by rewriting its code object in place.

    ``path`` is ``"function"`` or ``"Class.method"`` inside ``module``. A method is probed on
    the class that defines it (the MRO is walked), so every subclass that inherits it is traced;
    classmethods and staticmethods are unwrapped to their function. Each call runs
    ``on_call(integration, *params)`` (params: the positional parameters, the keyword-only ones,
    then the ``*args`` tuple and the ``**kwargs`` dict) which returns a span or None, and on a
    normal return ``on_return(span, result, *params)``. Exceptions are recorded on the span
    automatically.

    Where code cannot be rewritten (another interpreter, or a function the rewriter refuses)
    the attribute is replaced by a ``wrapt`` wrapper with the same semantics instead.
    ``optional`` marks a target that only some versions of the library have: where ``path`` is
    missing, the probe installs nothing (otherwise that is an error, counted and logged).
    ``only_if(params) -> bool``, for a probe that traces few of its calls, runs first on each
    call: a false answer leaves the call untraced at the cost of that check alone (``on_call``
    is not called). It is guarded like the other probe callables.
    """

    def __init__(self, module: str, path: str, *, on_call: OnCall,
                 on_return: OnReturn | None = None, optional: bool = False,
                 only_if: Callable[[tuple], bool] | None = None) -> None:
        self.module = module
        self.path = path
        self.on_call = on_call
        self.on_return = on_return
        self.optional = optional
        self.only_if = only_if
        self._hook_cache: tuple[Integration, Callable, Callable] | None = None

    def __repr__(self) -> str:
        return f"<FunctionProbe {self.module}:{self.path}>"

    def install(self, module: ModuleType, integration: Integration) -> Undo | None:
        # Imported at the first install, not with the registry: a program that imports no
        # instrumented library never loads bytecode or wrapt (start-up cost, see bench/ s4).
        from ddagent.hooks import rewrite, wrappers

        try:
            owner, attr, raw = wrappers.resolve_definition(module, self.path)
        except AttributeError:
            if self.optional:
                return None
            raise
        func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
        enter, exit = self._hooks(integration)
        if rewrite.SUPPORTED:
            if rewrite.is_instrumented(func):
                log.debug("%s is already instrumented; skipping", self)
                return None
            try:
                rewrite.instrument(func, enter, exit)
            except rewrite.RewriteError as exc:
                wrappers.note_fallback(f"{self.module}.{self.path}: {exc}")
            else:
                return lambda: rewrite.restore(func)
        else:
            wrappers.note_fallback("this interpreter's code objects cannot be rewritten")
        return wrappers.wrap_attribute(owner, attr, raw, enter, exit)

    def _hooks(self, integration: Integration) -> tuple[Callable, Callable]:
        # The same two callables every time, so re-enabling hits the rewriter's code cache.
        if self._hook_cache is None or self._hook_cache[0] is not integration:
            # partial objects, not closures: calling one costs no Python frame of its own
            # (two per probed call).
            enter = functools.partial(integration.enter, self.on_call)
            if self.only_if is not None:
                enter = _checked_first(self.only_if, enter, integration)
            exit = functools.partial(integration.exit, self.on_return)
            self._hook_cache = (integration, enter, exit)
        return self._hook_cache[1], self._hook_cache[2]


def _checked_first(only_if: Callable[[tuple], bool], enter: Callable[[tuple], Any],
                   integration: Integration) -> Callable[[tuple], Any]:
    """``enter``, called only for the calls ``only_if`` accepts.

    A closure, a Python frame more for an accepted call; a call it turns down skips
    :meth:`Integration.enter` and ``on_call``: ~3.3k instructions less for each of Flask's hook
    phases on every request of an app that registered no hooks (callgrind)."""
    def enter_if(params: tuple) -> Any:
        try:
            if not only_if(params):
                return None
        except Exception as exc:
            integration.probe_failed(exc)
            return None
        return enter(params)

    return enter_if


# -- the registry --------------------------------------------------------------------------

# Reentrant: a probe failing while this thread installs another one may call disable().
_LOCK = threading.RLock()
_LOADED: dict[str, Integration] = {}


# Enabled integrations whose library is not imported yet: their hook module (and what it
# imports: wrapt, bytecode, the HTTP layer...) is loaded only when the library is imported, so
# `python -m ddagent` of a program using none of them pays nothing for them at start-up.
_PENDING: set[str] = set()


def _hook_module(name: str) -> str:
    """The hook module of ``name``; PatchError if the name is unknown or not implemented."""
    if name not in KNOWN_INTEGRATIONS:
        raise PatchError(
            f"unknown integration {name!r}; valid names: {', '.join(sorted(KNOWN_INTEGRATIONS))}"
        )
    hook_module = KNOWN_INTEGRATIONS[name][0]
    if hook_module is None:
        raise PatchError(f"the {name} integration is not implemented yet in ddagent")
    return hook_module


def _load(name: str) -> Integration:
    """The Integration for ``name``, importing its hook module on first use."""
    if name in _LOADED:
        return _LOADED[name]
    integration = importlib.import_module(_hook_module(name)).integration
    with _LOCK:
        return _LOADED.setdefault(name, integration)


def _libraries(name: str) -> list[str]:
    return KNOWN_INTEGRATIONS[name][1].split(",")


def enable(name: str) -> None:
    """Switch ``name`` on: instrument its library now if imported, else when it is imported."""
    if name not in _LOADED:
        _hook_module(name)  # unknown or unimplemented names raise now, as before
        if not any(library in sys.modules for library in _libraries(name)):
            with _LOCK:
                if name not in _PENDING and name not in _LOADED:
                    _PENDING.add(name)
                    for library in _libraries(name):
                        finder.when_imported(library, _enabler(name, library))
                    return
    integration = _load(name)
    with _LOCK:
        if integration.enabled:
            return
        integration.enabled = True
        if not integration._watching:
            integration._watching = True
            for probe in integration.probes:
                # Runs the callback at once when the module is already imported.
                finder.when_imported(probe.module, _installer(integration, probe))
            return
        for probe in integration.probes:
            module = sys.modules.get(probe.module)
            if module is not None and not _initializing(module):
                integration._install(probe, module)


def _enabler(name: str, library: str) -> Callable[[ModuleType], None]:
    def enable_on_import(module: ModuleType) -> None:
        with _LOCK:
            if name not in _PENDING:  # disabled meanwhile, or already enabled
                return
            _PENDING.discard(name)
        enable(name)
        # ``library`` itself is still marked as initializing while its import callbacks run, so
        # enable() left its probes on that very module for later: install them now.
        integration = _LOADED[name]
        with _LOCK:
            if integration.enabled:
                for probe in integration.probes:
                    if probe.module == library:
                        integration._install(probe, module)

    return enable_on_import


def _installer(integration: Integration, probe: Probe) -> Callable[[ModuleType], None]:
    def install_on_import(module: ModuleType) -> None:
        with _LOCK:
            integration._install(probe, module)

    return install_on_import


def _initializing(module: ModuleType) -> bool:
    # A module still executing in another thread: the finder's callback will install it.
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def disable(name: str) -> None:
    """Switch ``name`` off: put back every original code object and attribute it replaced."""
    with _LOCK:
        if name in _PENDING:  # its library was never imported: nothing to put back
            _PENDING.discard(name)
            return
    integration = _load(name)
    with _LOCK:
        integration.enabled = False
        integration._uninstall()


def patch(raise_errors: bool = True, **modules: bool) -> None:
    """Instrument each library given a true value, e.g. ``patch(redis=True, sqlite3=True)``.

    Patching is lazy: a library is instrumented when it is imported (at once if it already is).
    With ``raise_errors`` a name that is unknown, not implemented yet, or whose library is not
    installed raises :class:`PatchError`; without it, it is logged and skipped.
    """
    wanted = [name for name, on in modules.items() if on]
    patched = []
    for name in wanted:
        try:
            _check_installed(name)
            enable(name)
        except Exception as exc:
            if raise_errors:
                raise
            level = WARNING if name not in KNOWN_INTEGRATIONS else DEBUG
            log.log(level, "ddagent: not patching %s: %s", name, exc)
        else:
            patched.append(name)
    log.info("ddagent: patched %d/%d modules (%s)", len(patched), len(wanted), ",".join(patched))


def _check_installed(name: str) -> None:
    _hook_module(name)
    if not _library_installed(name):
        raise PatchError(f"cannot patch {name}: the library is not installed")


def patch_all(**overrides: bool) -> None:
    """Instrument every known library (all but sqlalchemy by default) that is installed.

    Precedence, lowest first: the defaults, ``overrides`` (``patch_all(mysql=False)``),
    ``DD_PATCH_MODULES=redis:false,flask:true``, then ``DD_TRACE_<NAME>_ENABLED=false``: the
    operator's environment wins over the code, as with ddtrace.
    """
    modules = {name: name not in OFF_BY_DEFAULT for name in KNOWN_INTEGRATIONS}
    modules.update(overrides)
    modules.update(_patch_modules_from_env())
    for name in list(modules):
        var = f"DD_TRACE_{name.upper()}_ENABLED"
        value = env_bool(var)
        if value is not None:
            modules[name] = value
    patch(raise_errors=False, **modules)


def _patch_modules_from_env() -> dict[str, bool]:
    raw = os.environ.get("DD_PATCH_MODULES", "")
    result, malformed = parse_switches(filter(None, (part.strip() for part in raw.split(","))), ":")
    if malformed:
        log.warning("ddagent: ignoring %s in DD_PATCH_MODULES; the accepted form is "
                    "'name:true,name:false' (e.g. 'redis:false,flask:true')",
                    ", ".join(repr(m) for m in malformed))
    return result


def unpatch(*names: str) -> None:
    """Remove the instrumentation of ``names`` (all enabled integrations when none given)."""
    with _LOCK:
        targets = names or (*_PENDING, *(n for n, i in _LOADED.items() if i.enabled))
    for name in targets:
        disable(name)


def get_patched_modules() -> list[str]:
    """The seed's helper: sorted names of the enabled integrations."""
    with _LOCK:
        return sorted({*_PENDING, *(n for n, i in _LOADED.items() if i.enabled)})


def _library_installed(name: str) -> bool:
    return any(_module_installed(library) for library in KNOWN_INTEGRATIONS[name][1].split(","))


def _module_installed(library: str) -> bool:
    """Whether ``library`` can be imported, found without importing it. For ``package.module``
    the package is not imported either: ``find_spec("mysql.connector")`` would import ``mysql``,
    the application's code run before the application runs it (say, before it monkey-patches)."""
    if library in sys.modules:
        return True
    package, _, _ = library.rpartition(".")
    try:
        if package and "." not in package and package not in sys.modules:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.submodule_search_locations is None:
                return False
            return importlib.machinery.PathFinder.find_spec(
                library, list(spec.submodule_search_locations)) is not None
        return importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):
        return False


def _library_version(name: str) -> str | None:
    libraries = KNOWN_INTEGRATIONS[name][1].split(",")
    library = next((lib for lib in libraries if _module_installed(lib)), libraries[0])
    try:
        import importlib.metadata  # only status() needs it; costs ~20 ms of start-up

        return importlib.metadata.version(library)
    except Exception:
        # Not a distribution of that name (the standard library's sqlite3): ask the module,
        # if it is imported already (status() never imports a library).
        module = sys.modules.get(library)
        return getattr(module, "__version__", None) or getattr(module, "sqlite_version", None)


def status() -> list[dict[str, Any]]:
    """One dict per known integration, for ``--info`` and ``ddagent.probes.status()``.

    Keys: name, module (the library), installed, version, implemented, enabled, instrumented
    (probes are in place right now), errors (probe errors counted so far).
    """
    rows = []
    for name, (hook_module, library) in sorted(KNOWN_INTEGRATIONS.items()):
        integration = _LOADED.get(name)
        installed = _library_installed(name)
        rows.append({
            "name": name,
            "module": library,
            "installed": installed,
            "version": _library_version(name) if installed else None,
            "implemented": hook_module is not None,
            "enabled": bool(integration and integration.enabled) or name in _PENDING,
            "instrumented": bool(integration and integration.instrumented),
            "errors": STATS.get(f"probes.errors.{name}"),
        })
    return rows


# -- the core, looked up at call time (ddagent's __init__ imports this module) --------------

_TRACER_MODULE: Any = None  # ddagent.tracer once looked up (a module lookup less per span)


def _tracer_module() -> Any:
    global _TRACER_MODULE
    _TRACER_MODULE = sys.modules.get("ddagent.tracer") or importlib.import_module("ddagent.tracer")
    return _TRACER_MODULE


def global_tracer() -> Any:
    """``ddagent.tracer``, the global tracer, as it is now (tests may replace its writer)."""
    return (_TRACER_MODULE or _tracer_module()).tracer
