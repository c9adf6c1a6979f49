"""Enter/exit probes injected into a Python function by replacing its code object.

``instrument(func, on_enter, on_exit)`` swaps ``func.__code__`` for a rewritten copy; per call::

    token = on_enter(args)     # args: the parameters' values in co_varnames order (positional,
                               # keyword-only, then the *args tuple, the **kwargs dict)
    try:    body; at every `return v`:  on_exit(token, v, None); return v
    except BaseException as e:          on_exit(token, None, e); raise   (traceback unchanged)

Generators, coroutines and async generators call ``on_enter`` at their first resume and
``on_exit`` when their frame ends (return, raise, or ``close()``); generators and async
generators also call ``on_suspend(token)`` before each plain ``yield`` and ``on_resume(token)``
after it. ``throw()`` resumes the frame straight into exception handling, without ``on_resume``.
A None token leaves the call untraced: ``on_exit``, ``on_suspend`` and ``on_resume`` are then
not called.

Because the function object keeps its identity, references taken before instrumentation
(``from lib import f``, bound methods stored in a dict) run the probes too, and no wrapper frame
is added. ``restore(func)`` puts back the *identical* original code object.

Only plain functions are accepted. For a method, classmethod, staticmethod or property pass the
function underneath (``underlying_function(obj)`` unwraps them; for a property pass
``prop.fget``/``fset``/``fdel``). Patch where the function is defined (``cls.__dict__``) and every
subclass inheriting it is covered.

Probes are called exactly as given and must not raise. They live in the rewritten code's
constants, so instrumented code cannot be marshalled, and ``locals()`` shows one extra local.
Frames already running keep the code they started with: a generator suspended while
instrumented still calls its probes after ``restore``. On 3.13 any ``__code__`` assignment stops
CPython from specializing calls to that function object (about +8 ns per call, for good).

Rewritten code is cached per (identity of the original code object, identity of the probes), so
re-instrumenting with the same probe objects costs microseconds; rewriting costs about 1 ms.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref
from typing import Callable, Optional

SUPPORTED: bool = sys.implementation.name == "cpython" and (3, 9) <= sys.version_info[:2] <= (3, 13)

if SUPPORTED:  # bytecode may not know other interpreters' opcodes, so it is not even imported
    from ddagent.hooks import _rewrite_emit as _emit

__all__ = [
    "SUPPORTED",
    "RewriteError",
    "instrument",
    "is_instrumented",
    "original_code",
    "restore",
    "underlying_function",
]

# Rewritten copies kept per original code object, one per probe combination (most recent last).
_MAX_VARIANTS_PER_CODE = 8


class RewriteError(Exception):
    """This callable cannot be rewritten (C function, unsupported Python, unhandled code)."""


class _Instrumented:
    __slots__ = ("original", "rewritten")

    def __init__(self, original: types.CodeType, rewritten: types.CodeType) -> None:
        self.original = original
        self.rewritten = rewritten


class _CacheEntry:
    """Rewritten variants of one original code object, which is held weakly."""

    __slots__ = ("original_ref", "variants")

    def __init__(self, original_ref: weakref.ref) -> None:
        self.original_ref = original_ref
        self.variants: dict[tuple, types.CodeType] = {}


_lock = threading.RLock()  # re-entrant: a weakref callback may run while it is held
_instrumented: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # func -> _Instrumented
_cache: dict[int, _CacheEntry] = {}  # id(original code) -> its rewritten variants


def instrument(
    func: types.FunctionType,
    on_enter: Callable[[tuple], object],
    on_exit: Callable[[object, object, Optional[BaseException]], object],
    on_suspend: Optional[Callable[[object], object]] = None,
    on_resume: Optional[Callable[[object], object]] = None,
) -> None:
    """Make ``func`` call the probes (see the module docstring); re-instrumenting replaces them.

    Raises RewriteError, leaving ``func`` untouched, if it cannot be rewritten.
    """
    _check_function(func)
    probes = _emit.Probes(on_enter, on_exit, on_suspend, on_resume)
    with _lock:
        record = _instrumented.get(func)
        if record is not None and func.__code__ is record.rewritten:
            original = record.original
        else:
            original = func.__code__
        rewritten = _rewritten_code(original, probes)
        try:
            func.__code__ = rewritten  # atomic: a call runs either the old or the new code, whole
        except ValueError as e:  # e.g. a closure that does not match the code's free variables
            raise RewriteError(f"cannot install rewritten code on {func!r}: {e}") from e
        _instrumented[func] = _Instrumented(original, rewritten)


def restore(func: types.FunctionType) -> None:
    """Put back the identical original code object. No-op if ``func`` is not instrumented.

    If something else replaced ``func.__code__`` since, that code is left in place.
    """
    with _lock:
        record = _instrumented.pop(func, None)
        if record is not None and func.__code__ is record.rewritten:
            func.__code__ = record.original


def is_instrumented(func: object) -> bool:
    record = _instrumented.get(func) if isinstance(func, types.FunctionType) else None
    return record is not None and func.__code__ is record.rewritten


def original_code(func: types.FunctionType) -> types.CodeType:
    """The code ``func`` had before instrumentation (its current code if not instrumented)."""
    if not isinstance(func, types.FunctionType):
        raise RewriteError(f"{func!r} is not a Python function")
    record = _instrumented.get(func)
    if record is not None and func.__code__ is record.rewritten:
        return record.original
    return func.__code__


def underlying_function(obj: object) -> types.FunctionType:
    """The plain function behind a bound method, classmethod, staticmethod or property (fget)."""
    seen = 0
    while not isinstance(obj, types.FunctionType) and seen < 8:
        seen += 1
        if isinstance(obj, property):
            obj = obj.fget
        elif isinstance(obj, (types.MethodType, classmethod, staticmethod)):
            obj = obj.__func__
        else:
            break
    if not isinstance(obj, types.FunctionType):
        raise RewriteError(f"{obj!r} is not (and does not wrap) a Python function")
    return obj


def _check_function(func: object) -> None:
    if not SUPPORTED:
        version = ".".join(map(str, sys.version_info[:3]))
        raise RewriteError(
            f"code rewriting supports CPython 3.9-3.13, not {sys.implementation.name} {version}"
        )
    if not isinstance(func, types.FunctionType):
        kind = type(func).__name__
        raise RewriteError(
            f"{func!r} ({kind}) is not a Python function; C callables cannot be rewritten, and "
            "methods/classmethods/staticmethods/properties must be passed as their function "
            "(see underlying_function)"
        )


def _rewritten_code(original: types.CodeType, probes: tuple) -> types.CodeType:
    """Cached rewrite of ``original`` for these probe objects. Called with ``_lock`` held."""
    key = tuple(map(id, probes))  # the rewritten code holds the probes, so ids stay unique
    entry = _cache.get(id(original))
    if entry is None or entry.original_ref() is not original:
        entry = _CacheEntry(weakref.ref(original, _forget(id(original))))
        _cache[id(original)] = entry
    code = entry.variants.get(key)
    if code is None:
        code = _rewrite(original, probes)
        if len(entry.variants) >= _MAX_VARIANTS_PER_CODE:
            del entry.variants[next(iter(entry.variants))]
        entry.variants[key] = code
    return code


def _forget(code_id: int) -> Callable[[weakref.ref], None]:
    # Bound now, not looked up as globals: the callback may run during interpreter shutdown,
    # when this module's globals can already be gone.
    lock, cache = _lock, _cache

    def drop(ref: weakref.ref) -> None:
        with lock:
            entry = cache.get(code_id)
            if entry is not None and entry.original_ref is ref:
                del cache[code_id]

    return drop


def _rewrite(original: types.CodeType, probes: tuple) -> types.CodeType:
    if _emit.TOKEN in original.co_varnames:
        raise RewriteError(f"{original.co_name}: code was already rewritten by ddagent")
    try:
        code = _emit.transform(original, probes)
    except Exception as e:
        name = getattr(original, "co_qualname", original.co_name)
        raise RewriteError(f"cannot rewrite {name}: {e}") from e
    _check_same_shape(original, code)
    return code


def _check_same_shape(original: types.CodeType, code: types.CodeType) -> None:
    """Refuse a rewrite that would change anything a caller or inspect can see."""
    attrs = (
        "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_name",
        "co_filename", "co_firstlineno", "co_freevars", "co_cellvars", "co_qualname",
    )  # fmt: skip
    for attr in attrs:
        if getattr(original, attr, None) != getattr(code, attr, None):
            raise RewriteError(f"cannot rewrite {original.co_name}: {attr} would change")
    if code.co_varnames != (*original.co_varnames, _emit.TOKEN):
        raise RewriteError(f"cannot rewrite {original.co_name}: co_varnames would change")
