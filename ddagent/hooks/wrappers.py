"""``wrapt``-based probes, for callables whose code cannot be rewritten or must swap a value.

Three uses:

- :class:`WrapperProbe`: C callables such as ``sqlite3.connect``. They have no code object, and
  their types are immutable, so the module attribute is replaced by a ``wrapt.FunctionWrapper``
  that hands the call's result to ``on_result`` (which typically returns a proxy object, see
  ``hooks/dbapi.py``). A reference taken before instrumentation (``from sqlite3 import
  connect``) keeps the original: the agent has to start before the application imports these.
- :class:`AroundProbe`: a method whose call must be changed, not only observed: an argument
  replaced (``start_response`` and the body of a WSGI call, an HTTP client's headers copied
  before trace headers are added) or the return value swapped. Code rewriting can only watch
  a call, so the attribute is replaced by a wrapper that runs ``around`` instead.
- :func:`wrap_attribute`: the fallback for a :class:`~ddagent.hooks.registry.FunctionProbe`
  when the interpreter cannot be rewritten or the rewriter refuses a function. The attribute is
  replaced by a wrapper that calls the same enter/exit hooks; an info line is logged once.

Undoing puts the original attribute back, unless someone else replaced it in the meantime.
"""

from __future__ import annotations

import inspect
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import wrapt

if TYPE_CHECKING:
    from ddagent.hooks.registry import Integration, OnCall, OnReturn

# around(integration, wrapped, instance, args, kwargs): makes the call, returns what the caller gets
Around = Callable[["Integration", Callable, Any, tuple, dict], Any]

log = logging.getLogger(__name__)
_fallback_noted = False


def note_fallback(reason: str) -> None:
    """Log once per process that probes fall back to (slower) ``wrapt`` wrappers."""
    global _fallback_noted
    if not _fallback_noted:
        _fallback_noted = True
        log.info("ddagent: using wrapt wrappers instead of code rewriting (%s)", reason)


def call_probed(integration: Integration, on_call: OnCall, params: tuple,
                call: Callable[[], Any], on_return: OnReturn | None = None) -> Any:
    """Run ``call()`` inside the integration's guarded probe: enter, then exit with its outcome."""
    token = integration.enter(on_call, params)
    if token is None:
        return call()
    try:
        result = call()
    except BaseException as exc:
        integration.exit(None, token, None, exc)
        raise
    integration.exit(on_return, token, result, None)
    return result


async def call_probed_async(integration: Integration, on_call: OnCall, params: tuple,
                            call: Callable[[], Awaitable],
                            on_return: OnReturn | None = None) -> Any:
    """:func:`call_probed` for a coroutine: the span lasts until it is done."""
    token = integration.enter(on_call, params)
    if token is None:
        return await call()
    try:
        result = await call()
    except BaseException as exc:
        integration.exit(None, token, None, exc)
        raise
    integration.exit(on_return, token, result, None)
    return result


class WrapperProbe:
    """Replace the callable ``module.attr`` so that its result goes through ``on_result``.

    ``on_result(integration, result, args, kwargs)`` returns what the caller receives instead
    (e.g. a traced proxy of a connection). If it raises, the error is handled like any probe
    error and the caller gets the original result.
    """

    def __init__(self, module: str, attr: str, *,
                 on_result: Callable[[Integration, Any, tuple, dict], Any]) -> None:
        self.module = module
        self.attr = attr
        self.on_result = on_result

    def __repr__(self) -> str:
        return f"<WrapperProbe {self.module}.{self.attr}>"

    def install(self, module: ModuleType, integration: Integration) -> Callable[[], None] | None:
        original = getattr(module, self.attr)
        if isinstance(original, _ProbeWrapper):
            # An alias of a callable wrapped through another module (``sqlite3.connect`` is
            # copied from ``sqlite3.dbapi2``): it shares that wrapper; undo restores it here too.
            return _replace(module, self.attr, original, original.__wrapped__)
        on_result = self.on_result

        def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
            result = wrapped(*args, **kwargs)
            if not integration.enabled:
                return result
            try:
                return on_result(integration, result, args, kwargs)
            except Exception as exc:
                integration.probe_failed(exc)
                return result

        return _replace(module, self.attr, _ProbeWrapper(original, wrapper), original)


class AroundProbe:
    """Replace ``path`` (``"function"`` or ``"Class.method"``) of ``module`` by a wrapper.

    While the integration is enabled each call runs
    ``around(integration, wrapped, instance, args, kwargs)``, which must call ``wrapped`` once
    and return what the caller gets; it guards its own tracing code. A disabled integration's
    calls pass straight through, unless ``always``: then ``around`` runs anyway (for
    compatibility shims that must keep accepting objects traced before a disable). A method is
    replaced on the class that defines it (a classmethod stays bound to the class it is called
    on); undo puts the original back. An attribute that already holds a ddagent wrapper (an
    alias of one probed under another name) is left as it is.
    """

    def __init__(self, module: str, path: str, around: Around, *, always: bool = False) -> None:
        self.module = module
        self.path = path
        self.around = around
        self.always = always

    def __repr__(self) -> str:
        return f"<AroundProbe {self.module}:{self.path}>"

    def install(self, module: ModuleType, integration: Integration) -> Callable[[], None] | None:
        owner, attr, raw = resolve_definition(module, self.path)
        if isinstance(raw, _ProbeWrapper):
            return None
        around = self.around

        if self.always:
            def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
                return around(integration, wrapped, instance, args, kwargs)
        else:
            def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
                if not integration.enabled:
                    return wrapped(*args, **kwargs)
                return around(integration, wrapped, instance, args, kwargs)

        return _replace(owner, attr, _ProbeWrapper(raw, wrapper), raw)


def resolve_definition(module: ModuleType, path: str) -> tuple[Any, str, Any]:
    """(owner, attribute, raw object) for ``path`` in ``module``.

    ``path`` is ``"function"`` or ``"Class.method"``; for a method the owner is the class that
    defines it (the MRO is walked) and the raw object is its ``vars()`` entry, so a classmethod
    or staticmethod comes back as that descriptor, unbound. Raises AttributeError if missing.
    """
    *class_path, attr = path.split(".")
    owner: Any = module
    for part in class_path:
        owner = getattr(owner, part)
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attr in vars(klass):
                return klass, attr, vars(klass)[attr]
        raise AttributeError(f"{owner.__qualname__} has no attribute {attr!r}")
    return owner, attr, getattr(owner, attr)


def wrap_attribute(owner: Any, attr: str, raw: Any, enter: Callable[[tuple], Any],
                   exit: Callable[[Any, Any, BaseException | None], None]) -> Callable[[], None]:
    """Replace ``owner.attr`` (whose raw value is ``raw``) by a wrapper calling enter/exit.

    The hooks receive the same parameter tuple as with code rewriting (positional parameters,
    keyword-only ones, then the ``*args`` tuple and the ``**kwargs`` dict), at the same moments:
    the call of a coroutine, generator or async generator function is probed from its first
    resumption until it returns, raises or is closed, not just while it builds the object.
    """
    func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
    # The function's own parameters, not those of a functools.wraps target (__wrapped__).
    signature = inspect.signature(func, follow_wrapped=False)
    code = func.__code__
    # The rewriter's order: positional, keyword-only, then the *args tuple and **kwargs dict.
    count = (code.co_argcount + code.co_kwonlyargcount
             + bool(code.co_flags & inspect.CO_VARARGS)
             + bool(code.co_flags & inspect.CO_VARKEYWORDS))
    names = code.co_varnames[:count]
    prepend_instance = not isinstance(raw, staticmethod)
    probed_body = _BODY_PROBES.get(code.co_flags & _BODY_KINDS)

    def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        full_args = (instance, *args) if prepend_instance and instance is not None else args
        try:
            bound = signature.bind(*full_args, **kwargs)
            bound.apply_defaults()
            params = tuple(bound.arguments[name] for name in names)
        except TypeError:
            # The call does not match the signature: let the function raise its own error.
            return wrapped(*args, **kwargs)
        if probed_body is not None:
            return probed_body(wrapped(*args, **kwargs), params, enter, exit)
        token = enter(params)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            exit(token, None, exc)
            raise
        exit(token, result, None)
        return result

    return _replace(owner, attr, _ProbeWrapper(raw, wrapper), raw)


async def _probed_coroutine(coroutine: Any, params: tuple, enter: Callable,
                            exit: Callable) -> Any:
    token = enter(params)
    try:
        result = await coroutine
    except BaseException as exc:
        exit(token, None, exc)
        raise
    exit(token, result, None)
    return result


def _probed_generator(generator: Any, params: tuple, enter: Callable, exit: Callable) -> Any:
    token = enter(params)
    try:
        result = yield from generator  # send(), throw() and close() reach the generator
    except BaseException as exc:
        exit(token, None, exc)
        raise
    exit(token, result, None)
    return result


async def _probed_async_generator(agen: Any, params: tuple, enter: Callable,
                                  exit: Callable) -> Any:
    token = enter(params)
    try:
        item = await agen.__anext__()
        while True:  # ``yield from`` by hand: asend(), athrow() and aclose() reach ``agen``
            try:
                sent = yield item
            except GeneratorExit:
                await agen.aclose()
                raise
            except BaseException as exc:
                item = await agen.athrow(exc)
            else:
                item = await agen.asend(sent)
    except StopAsyncIteration:
        exit(token, None, None)
    except BaseException as exc:
        exit(token, None, exc)
        raise


_BODY_KINDS = inspect.CO_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
# What a call of such a function returns, wrapped so that its whole run is probed.
_BODY_PROBES: dict[int, Callable[[Any, tuple, Callable, Callable], Any]] = {
    inspect.CO_COROUTINE: _probed_coroutine,
    inspect.CO_GENERATOR: _probed_generator,
    inspect.CO_ASYNC_GENERATOR: _probed_async_generator,
}


class _ProbeWrapper(wrapt.FunctionWrapper):
    """A wrapper ddagent installed (told apart from the application's own wrapt wrappers)."""


def _replace(owner: Any, attr: str, replacement: Any, original: Any) -> Callable[[], None]:
    setattr(owner, attr, replacement)

    def undo() -> None:
        current = vars(owner).get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if current is replacement:
            setattr(owner, attr, original)

    return undo
