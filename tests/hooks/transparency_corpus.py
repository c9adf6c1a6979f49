"""Tricky functions for the rewrite transparency suite (odd code on purpose; ruff skips this file).

Each CASES entry names a function to instrument (``target``) and a ``drive`` callable that
exercises it and returns something comparable; the suite runs ``drive`` with the target
plain and instrumented and compares results, exceptions and formatted tracebacks.
"""
import asyncio
import contextlib
import functools
import sys
from typing import Callable, NamedTuple


class Case(NamedTuple):
    name: str
    target: Callable  # () -> the plain function to instrument
    drive: Callable  # () -> observable result (may raise)
    calls: int  # enter/exit pairs one drive produces


# -- parameters --------------------------------------------------------------------------------

def all_kinds(a, b=2, /, c=3, *args, d, e=5, **kwargs):
    """Every parameter kind."""
    return (a, b, c, args, d, e, sorted(kwargs.items()))


def kw_only_no_default(*, key):
    return key * 2


def only_varargs(*args, **kwargs):
    return args, kwargs


def no_params():
    return 42


def cell_param(x, y):
    # x and y are captured by the inner functions: they live in cells.
    def get():
        return x + y
    y = y * 10
    return get() + (lambda: x)()


def many_defaults(a=[], b={}, c=None):  # noqa: B006 (the mutable default is the point)
    a.append(1)
    return len(a), b, c


# -- closures, decorators, recursion ---------------------------------------------------------

def make_counter(start):
    count = start

    def bump(step=1):
        nonlocal count
        count += step
        return count
    return bump


counter_one = make_counter(0)
counter_two = make_counter(100)  # same code object as counter_one, different closure


def logged(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return ("logged", func(*args, **kwargs))
    return wrapper


@logged
def decorated(x, *, scale=2):
    return x * scale


def factorial(n):
    if n <= 1:
        return 1
    return n * factorial(n - 1)


def fib_memo(n, memo=None):
    memo = {} if memo is None else memo
    if n < 2:
        return n
    if n not in memo:
        memo[n] = fib_memo(n - 1, memo) + fib_memo(n - 2, memo)
    return memo[n]


# -- exceptions ----------------------------------------------------------------------------------

def raise_deep(n):
    if n == 0:
        {}["missing"]
    return raise_deep(n - 1)


def raise_chained():
    try:
        1 / 0
    except ZeroDivisionError as e:
        raise ValueError("wrapped") from e


def raise_in_loop_in_with(items):
    total = 0
    with contextlib.suppress(KeyError):
        for i in items:
            for j in range(3):
                total += 10 // (i - j)
    return total


def handled_inside():
    try:
        raise KeyError("inner")
    except KeyError:
        info_inside = sys.exc_info()[0]
    return info_inside, sys.exc_info()


def raise_base_exception():
    raise SystemExit(3)


def raise_in_comprehension(values):
    return [1 / v for v in values]


def reraise_bare():
    try:
        int("x")
    except ValueError:
        raise


def exc_info_after_inner_raise():
    try:
        raise KeyError("outer")
    except KeyError:
        try:
            reraise_bare()
        except ValueError:
            pass
        return repr(sys.exc_info()[1])  # the outer exception again


def exception_group_like(n):
    errors = []
    for i in range(n):
        try:
            if i % 2:
                raise TypeError(i)
        except TypeError as e:
            errors.append(e.args)
    if errors:
        raise RuntimeError(errors)
    return n


# -- return inside try/finally and with ------------------------------------------------------------

def finally_overrides(x):
    try:
        return x
    finally:
        if x > 0:
            return -x  # noqa: B012 (overriding is the point)


def return_in_try_finally(log):
    try:
        log.append("body")
        return "from-try"
    finally:
        log.append("finally")


def return_in_with(cm_log):
    @contextlib.contextmanager
    def cm():
        cm_log.append("enter")
        try:
            yield "v"
        finally:
            cm_log.append("exit")
    with cm() as v:
        return v * 2


def break_continue_in_finally(n):
    out = []
    for i in range(n):
        try:
            if i == 1:
                continue
            if i == 3:
                break
            out.append(i)
        finally:
            out.append(-i)
    return out


def nested_try(x):
    try:
        try:
            if x:
                raise ValueError(x)
            return "none"
        except ValueError:
            return "value"
        finally:
            x = 0
    except Exception:
        return "outer"


# -- generators --------------------------------------------------------------------------------

def counting_gen(n):
    total = 0
    for i in range(n):
        got = yield i
        if got:
            total += got
    return total


def inner_gen():
    x = yield "a"
    yield x
    return "inner-result"


def delegating_gen():
    result = yield from inner_gen()
    yield result
    return "done"


def gen_with_cleanup(log):
    try:
        yield 1
        yield 2
    finally:
        log.append("cleanup")


def gen_catching_throw():
    while True:
        try:
            yield "ready"
        except ValueError as e:
            yield f"caught {e}"
            return


def gen_raising_stop_iteration():
    yield 1
    raise StopIteration  # becomes RuntimeError (PEP 479)


def gen_raising():
    yield 1
    raise KeyError("from-gen")


def drive_counting():
    g = counting_gen(4)
    out = [next(g), g.send(5), g.send(6), next(g)]
    try:
        next(g)
    except StopIteration as stop:
        out.append(("return", stop.value))
    return out


def drive_delegating():
    g = delegating_gen()
    return [next(g), g.send("sent"), next(g), list(g)]


def drive_close(log):
    g = gen_with_cleanup(log)
    next(g)
    g.close()
    return list(log)


def drive_throw():
    g = gen_catching_throw()
    return [next(g), g.throw(ValueError("boom")), list(g)]


# -- coroutines and async generators -------------------------------------------------------------

async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


async def async_raises():
    await asyncio.sleep(0)
    raise LookupError("async")


async def async_sleeper(log):
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        log.append("cancelled")
        raise


async def async_gen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def async_gen_cleanup(log):
    try:
        yield 1
        yield 2
    finally:
        log.append("agen-cleanup")


def drive_cancel(log):
    async def main():
        task = asyncio.ensure_future(async_sleeper(log))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled", list(log)
    return asyncio.run(main())


def drive_async_gen():
    async def main():
        return [i async for i in async_gen(3)]
    return asyncio.run(main())


def drive_aclose(log):
    async def main():
        agen = async_gen_cleanup(log)
        first = await agen.__anext__()
        await agen.aclose()
        return first, list(log)
    return asyncio.run(main())


# -- methods -----------------------------------------------------------------------------------

class Base:
    def __init__(self, value):
        self.value = value

    def describe(self, prefix="v"):
        return f"{prefix}={self.value}"


class Child(Base):
    def __init__(self, value, extra):
        super().__init__(value)  # zero-argument super() needs the __class__ cell
        self.extra = extra

    def describe(self, prefix="c"):
        return super().describe(prefix) + f"+{self.extra}"

    @classmethod
    def build(cls, value):
        return cls(value, "built")

    @staticmethod
    def helper(x, y=1):
        return x - y

    @property
    def total(self):
        return self.value + len(self.extra)

    @total.setter
    def total(self, new):
        self.value = new


def drive_property_setter():
    c = Child(1, "ab")
    c.total = 7
    return c.value


# -- many locals: EXTENDED_ARG for locals and constants -------------------------------------------

_many_src = "def many_locals(seed):\n" + "".join(
    f"    v{i} = seed + {i * 1000 + 7}\n" for i in range(300)
) + "    return " + " + ".join(f"v{i}" for i in range(0, 300, 7)) + "\n"
exec(compile(_many_src, __file__ + ":many_locals", "exec"))


# -- 25 blocks: 3.9/3.10 cannot take one more block if all were nested, so the rewriter refuses --

_withs_src = "def many_withs(cm):\n    n = 0\n" + "".join(
    "    with cm:\n        n += 1\n" for _ in range(25)
) + "    return n\n"
exec(compile(_withs_src, __file__ + ":many_withs", "exec"))


# -- the cases ---------------------------------------------------------------------------------

def _expect_raise(func, *args):
    return func(*args)


CASES = [
    Case("all_kinds", lambda: all_kinds, lambda: all_kinds(1, d=4, z=9), 1),
    Case("all_kinds_full", lambda: all_kinds, lambda: all_kinds(1, 2, 3, 4, 5, d=6, e=7, f=8), 1),
    Case("all_kinds_missing_kwonly", lambda: all_kinds, lambda: all_kinds(1), 0),
    Case("kw_only_no_default", lambda: kw_only_no_default, lambda: kw_only_no_default(key="k"), 1),
    Case("only_varargs", lambda: only_varargs, lambda: only_varargs(1, 2, x=3), 1),
    Case("no_params", lambda: no_params, no_params, 1),
    Case("cell_param", lambda: cell_param, lambda: cell_param(1, 2), 1),
    Case("many_defaults", lambda: many_defaults, lambda: (many_defaults()[0] > 0, many_defaults(c=1)[2]), 2),
    Case("closure_nonlocal", lambda: counter_one, lambda: (counter_one(5) - counter_one(0), counter_two(0) - counter_two(0)), 2),
    Case("decorated_outer", lambda: decorated, lambda: decorated(3, scale=4), 1),
    Case("decorated_inner", lambda: decorated.__wrapped__, lambda: decorated(3), 1),
    Case("recursion", lambda: factorial, lambda: factorial(10), 10),
    Case("recursion_memo", lambda: fib_memo, lambda: fib_memo(15), 29),
    Case("raise_deep", lambda: raise_deep, lambda: raise_deep(3), 4),
    Case("raise_chained", lambda: raise_chained, raise_chained, 1),
    Case("raise_in_loop_in_with", lambda: raise_in_loop_in_with, lambda: raise_in_loop_in_with([5, 1, 7]), 1),
    Case("handled_inside", lambda: handled_inside, handled_inside, 1),
    Case("base_exception", lambda: raise_base_exception, raise_base_exception, 1),
    Case("raise_in_comprehension", lambda: raise_in_comprehension, lambda: raise_in_comprehension([1, 2, 0]), 1),
    Case("reraise_bare", lambda: reraise_bare, reraise_bare, 1),
    Case("exc_info_restored_for_caller", lambda: reraise_bare, exc_info_after_inner_raise, 1),
    Case("exceptions_in_loop", lambda: exception_group_like, lambda: exception_group_like(4), 1),
    Case("finally_overrides", lambda: finally_overrides, lambda: (finally_overrides(3), finally_overrides(-2)), 2),
    Case("return_in_try_finally", lambda: return_in_try_finally, lambda: (return_in_try_finally(log := []), log), 1),
    Case("return_in_with", lambda: return_in_with, lambda: (return_in_with(log := []), log), 1),
    Case("break_continue_in_finally", lambda: break_continue_in_finally, lambda: break_continue_in_finally(5), 1),
    Case("nested_try", lambda: nested_try, lambda: (nested_try(0), nested_try(1)), 2),
    Case("generator_send", lambda: counting_gen, drive_counting, 1),
    Case("generator_list", lambda: counting_gen, lambda: list(counting_gen(5)), 1),
    Case("yield_from_outer", lambda: delegating_gen, drive_delegating, 1),
    Case("yield_from_inner", lambda: inner_gen, drive_delegating, 1),
    Case("generator_close", lambda: gen_with_cleanup, lambda: drive_close([]), 1),
    Case("generator_throw", lambda: gen_catching_throw, drive_throw, 1),
    Case("generator_stop_iteration", lambda: gen_raising_stop_iteration, lambda: list(gen_raising_stop_iteration()), 1),
    Case("generator_raising", lambda: gen_raising, lambda: list(gen_raising()), 1),
    Case("coroutine", lambda: async_add, lambda: asyncio.run(async_add(2, 3)), 1),
    Case("coroutine_raises", lambda: async_raises, lambda: asyncio.run(async_raises()), 1),
    Case("coroutine_cancelled", lambda: async_sleeper, lambda: drive_cancel([]), 1),
    Case("async_generator", lambda: async_gen, drive_async_gen, 1),
    Case("async_generator_aclose", lambda: async_gen_cleanup, lambda: drive_aclose([]), 1),
    Case("init_zero_arg_super", lambda: Child.__dict__["__init__"], lambda: vars(Child(1, "x")), 1),
    Case("method_super", lambda: Child.__dict__["describe"], lambda: Child(2, "y").describe(), 1),
    Case("base_method_via_super", lambda: Base.__dict__["describe"], lambda: Child(2, "y").describe(), 1),
    Case("classmethod", lambda: Child.__dict__["build"].__func__, lambda: vars(Child.build(5)), 1),
    Case("staticmethod", lambda: Child.__dict__["helper"].__func__, lambda: (Child.helper(5), Child(1, "").helper(5, 2)), 2),
    Case("property_getter", lambda: Child.__dict__["total"].fget, lambda: Child(3, "abc").total, 1),
    Case("property_setter", lambda: Child.__dict__["total"].fset, drive_property_setter, 1),
    Case("many_locals", lambda: many_locals, lambda: many_locals(1), 1),  # noqa: F821 (exec'd)
    Case("lambda", lambda: square, lambda: square(7), 1),  # noqa: F821
]

square = lambda x: x * x  # noqa: E731
