"""Transparency of code rewriting: an instrumented function behaves exactly like the original."""

from __future__ import annotations

import inspect
import sys
import threading
import traceback
import types

import pytest

from ddagent.hooks import rewrite
from ddagent.hooks.rewrite import (
    RewriteError,
    instrument,
    is_instrumented,
    original_code,
    restore,
    underlying_function,
)
from tests.hooks import transparency_corpus as corpus

pytestmark = pytest.mark.skipif(not rewrite.SUPPORTED, reason="interpreter not rewritable")


class Recorder:
    """Probes that record every call; tokens are unique so exits can be matched to enters."""

    def __init__(self) -> None:
        self.events: list = []
        self._lock = threading.Lock()
        self._next = 0

    def on_enter(self, args):
        with self._lock:
            self._next += 1
            token = self._next
        self.events.append(("enter", token, args))
        return token

    def on_exit(self, token, value, exc):
        self.events.append(("exit", token, value, exc))

    def on_suspend(self, token):
        self.events.append(("suspend", token))

    def on_resume(self, token):
        self.events.append(("resume", token))

    def install(self, func, yields: bool = True) -> None:
        if yields:
            instrument(func, self.on_enter, self.on_exit, self.on_suspend, self.on_resume)
        else:
            instrument(func, self.on_enter, self.on_exit)

    def of(self, kind: str) -> list:
        return [e for e in self.events if e[0] == kind]

    def assert_balanced(self) -> None:
        entered = [e[1] for e in self.of("enter")]
        exited = [e[1] for e in self.of("exit")]
        assert sorted(entered) == sorted(exited), self.events


def outcome(drive):
    """What a caller can observe: the result, or the exception with its formatted traceback."""
    try:
        return ("returned", repr(drive()))
    except BaseException as e:  # SystemExit is part of the corpus
        formatted = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return ("raised", type(e), str(e), formatted)


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    # Leave the shared corpus clean for the next test.
    for case in corpus.CASES:
        restore(case.target())


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_corpus_behaves_the_same_when_instrumented(case, recorder):
    func = case.target()
    original = func.__code__
    expected = outcome(case.drive)

    recorder.install(func)
    assert is_instrumented(func)
    assert outcome(case.drive) == expected
    recorder.assert_balanced()
    assert len(recorder.of("enter")) == case.calls

    restore(func)
    assert func.__code__ is original
    assert outcome(case.drive) == expected


class UntracingRecorder(Recorder):
    """Probes whose on_enter leaves every call untraced (returns None)."""

    def on_enter(self, args):
        super().on_enter(args)


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_a_none_token_skips_every_other_probe(case):
    # on_enter returning None leaves the call untraced: no on_exit, on_suspend or on_resume,
    # whether the call returns, raises, yields or is closed; the behaviour stays the same.
    func = case.target()
    expected = outcome(case.drive)
    recorder = UntracingRecorder()
    recorder.install(func)
    try:
        assert outcome(case.drive) == expected
    finally:
        restore(func)
    assert len(recorder.of("enter")) == case.calls
    assert [e for e in recorder.events if e[0] != "enter"] == []


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_corpus_inspect_answers_unchanged(case, recorder):
    func = case.target()

    def answers():
        try:
            source = inspect.getsource(func)
        except OSError:  # exec'd code has no source file
            source = None
        return (
            str(inspect.signature(func)),
            inspect.isgeneratorfunction(func),
            inspect.iscoroutinefunction(func),
            inspect.isasyncgenfunction(func),
            source,
            func.__name__,
            func.__qualname__,
            func.__doc__,
            func.__defaults__,
            func.__kwdefaults__,
            getattr(func, "__wrapped__", None),
            func.__code__.co_firstlineno,
            func.__code__.co_filename,
            func.__code__.co_flags,
        )

    expected = answers()
    recorder.install(func)
    assert answers() == expected


def test_probes_see_arguments_in_co_varnames_order(recorder):
    recorder.install(corpus.all_kinds)
    corpus.all_kinds(1, 2, 3, 4, d=5, z=6)
    ((_, token, args),) = recorder.of("enter")
    assert args == (1, 2, 3, 5, 5, (4,), {"z": 6})
    assert recorder.of("exit") == [("exit", token, (1, 2, 3, (4,), 5, 5, [("z", 6)]), None)]


def test_probes_see_cell_captured_parameters(recorder):
    recorder.install(corpus.cell_param)
    corpus.cell_param(1, 2)
    assert recorder.of("enter")[0][2] == (1, 2)


def test_probes_see_the_exception_raised(recorder):
    recorder.install(corpus.raise_deep)
    with pytest.raises(KeyError) as info:
        corpus.raise_deep(0)
    ((_, _, value, exc),) = recorder.of("exit")
    assert value is None and exc is info.value


def test_probes_see_base_exceptions(recorder):
    recorder.install(corpus.raise_base_exception)
    with pytest.raises(SystemExit):
        corpus.raise_base_exception()
    assert isinstance(recorder.of("exit")[0][3], SystemExit)


def test_finally_overriding_return_reports_the_final_value(recorder):
    recorder.install(corpus.finally_overrides)
    assert corpus.finally_overrides(3) == -3
    assert [e[2] for e in recorder.of("exit")] == [-3]


def test_generator_span_covers_first_resume_to_return(recorder):
    recorder.install(corpus.counting_gen)
    gen = corpus.counting_gen(2)
    assert recorder.events == []  # creating the generator runs nothing
    assert list(gen) == [0, 1]
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["enter", "suspend", "resume", "suspend", "resume", "exit"]
    assert recorder.events[-1][2] == 0  # the generator's return value


def test_generator_close_reports_generator_exit(recorder):
    recorder.install(corpus.gen_with_cleanup)
    gen = corpus.gen_with_cleanup([])
    next(gen)
    gen.close()
    assert isinstance(recorder.of("exit")[0][3], GeneratorExit)


def test_never_started_generator_makes_no_probe_calls(recorder):
    recorder.install(corpus.counting_gen)
    corpus.counting_gen(3).close()
    assert recorder.events == []


def test_yield_from_and_await_are_not_plain_yields(recorder):
    recorder.install(corpus.delegating_gen)
    corpus.drive_delegating()
    # delegating_gen has one plain yield; the values inner_gen yields pass through `yield from`.
    assert len(recorder.of("suspend")) == 1
    recorder.events.clear()
    recorder.install(corpus.async_add)
    corpus.asyncio.run(corpus.async_add(1, 2))
    assert [e[0] for e in recorder.events] == ["enter", "exit"]


def test_coroutine_cancellation_reports_cancelled_error(recorder):
    recorder.install(corpus.async_sleeper)
    corpus.drive_cancel([])
    assert isinstance(recorder.of("exit")[0][3], corpus.asyncio.CancelledError)


def test_async_generator_aclose_reports_generator_exit(recorder):
    recorder.install(corpus.async_gen_cleanup)
    corpus.drive_aclose([])
    assert isinstance(recorder.of("exit")[0][3], GeneratorExit)
    assert len(recorder.of("suspend")) == 1


def test_restore_while_suspended_keeps_the_running_frame_balanced(recorder):
    recorder.install(corpus.counting_gen)
    gen = corpus.counting_gen(3)
    next(gen)
    restore(corpus.counting_gen)
    assert list(gen) == [1, 2]
    recorder.assert_balanced()


def test_restore_puts_back_the_identical_code_object():
    func = corpus.no_params
    original = func.__code__
    instrument(func, Recorder().on_enter, Recorder().on_exit)
    assert func.__code__ is not original
    assert original_code(func) is original
    restore(func)
    assert func.__code__ is original and not is_instrumented(func)
    assert original_code(func) is original
    restore(func)  # restoring twice is harmless
    assert func.__code__ is original


def test_instrumenting_twice_replaces_the_probes(recorder):
    other = Recorder()
    recorder.install(corpus.no_params)
    other.install(corpus.no_params)
    corpus.no_params()
    assert recorder.events == [] and len(other.of("exit")) == 1
    restore(corpus.no_params)
    assert corpus.no_params.__code__ is original_code(corpus.no_params)
    assert not is_instrumented(corpus.no_params)


def test_rewritten_code_is_cached_per_code_and_probes():
    rec = Recorder()
    enter, exit_ = rec.on_enter, rec.on_exit
    func = corpus.factorial
    instrument(func, enter, exit_)
    first = func.__code__
    restore(func)
    instrument(func, enter, exit_)
    assert func.__code__ is first  # same code, same probes: reused
    instrument(func, Recorder().on_enter, exit_)
    assert func.__code__ is not first  # different probes never share code
    restore(func)


def test_equal_code_from_two_files_is_not_shared():
    source = "def twin(x):\n    return 1 / x\n"
    namespaces = []
    for filename in ("file_one.py", "file_two.py"):
        ns: dict = {}
        exec(compile(source, filename, "exec"), ns)
        namespaces.append(ns)
    one, two = namespaces[0]["twin"], namespaces[1]["twin"]
    assert one.__code__ == two.__code__  # equal, yet distinct: the cache must not confuse them
    rec = Recorder()
    instrument(one, rec.on_enter, rec.on_exit)
    instrument(two, rec.on_enter, rec.on_exit)
    assert two.__code__.co_filename == "file_two.py"
    with pytest.raises(ZeroDivisionError) as info:
        two(0)
    assert traceback.extract_tb(info.value.__traceback__)[-1].filename == "file_two.py"


def test_cache_forgets_code_that_is_gone():
    import gc

    namespace: dict = {}
    exec(compile("def short_lived():\n    return 1\n", "short_lived.py", "exec"), namespace)
    func = namespace.pop("short_lived")
    code_id = id(func.__code__)
    rec = Recorder()
    instrument(func, rec.on_enter, rec.on_exit)
    assert code_id in rewrite._cache
    restore(func)
    del func
    gc.collect()
    assert code_id not in rewrite._cache


def test_shared_closure_code_is_instrumented_per_function_object(recorder):
    recorder.install(corpus.counter_one)
    corpus.counter_two(0)
    assert recorder.events == []
    assert corpus.counter_two.__code__ is original_code(corpus.counter_one)


def test_token_local_is_appended_after_the_original_locals(recorder):
    names = corpus.cell_param.__code__.co_varnames
    recorder.install(corpus.cell_param)
    assert corpus.cell_param.__code__.co_varnames[: len(names)] == names
    assert len(corpus.cell_param.__code__.co_varnames) == len(names) + 1


@pytest.mark.parametrize(
    "callable_",
    [len, sorted, "".join, dict.get, types.FunctionType.__call__, print],
    ids=lambda c: getattr(c, "__qualname__", repr(c)),
)
def test_c_callables_are_refused(callable_):
    with pytest.raises(RewriteError):
        instrument(callable_, Recorder().on_enter, Recorder().on_exit)


def test_sqlite3_connect_and_partial_are_refused():
    import functools
    import sqlite3

    for callable_ in (sqlite3.connect, functools.partial(corpus.no_params)):
        with pytest.raises(RewriteError):
            instrument(callable_, Recorder().on_enter, Recorder().on_exit)


def test_methods_are_refused_but_unwrap_to_their_function():
    child = corpus.Child(1, "x")
    with pytest.raises(RewriteError, match="underlying_function"):
        instrument(child.describe, Recorder().on_enter, Recorder().on_exit)
    raw = corpus.Child.__dict__
    assert underlying_function(child.describe) is raw["describe"]
    assert underlying_function(raw["build"]) is raw["build"].__func__
    assert underlying_function(corpus.Child.build) is raw["build"].__func__
    assert underlying_function(raw["helper"]) is raw["helper"].__func__
    assert underlying_function(raw["total"]) is raw["total"].fget
    with pytest.raises(RewriteError):
        underlying_function(len)


def test_unsupported_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(rewrite, "SUPPORTED", False)
    with pytest.raises(RewriteError, match="3.9-3.13"):
        instrument(corpus.no_params, Recorder().on_enter, Recorder().on_exit)
    assert not is_instrumented(corpus.no_params)


def test_a_failed_rewrite_leaves_the_function_untouched(monkeypatch):
    def broken(code, probes):
        raise ValueError("cannot")

    monkeypatch.setattr(rewrite._emit, "transform", broken)
    func = corpus.nested_try
    original = func.__code__
    with pytest.raises(RewriteError, match="cannot"):
        instrument(func, Recorder().on_enter, Recorder().on_exit)
    assert func.__code__ is original and not is_instrumented(func)


def test_too_many_blocks_is_refused_on_block_stack_pythons_and_fine_after():
    import contextlib

    func = corpus.many_withs  # exec'd in the corpus
    original = func.__code__
    rec = Recorder()
    if sys.version_info < (3, 11):
        with pytest.raises(RewriteError, match="blocks"):
            instrument(func, rec.on_enter, rec.on_exit)
        assert func.__code__ is original
    else:
        instrument(func, rec.on_enter, rec.on_exit)
        assert func(contextlib.nullcontext()) == 25
        rec.assert_balanced()
        restore(func)


def test_threads_calling_while_toggled_stay_balanced():
    rec = Recorder()
    func = corpus.fib_memo
    original = func.__code__
    stop = threading.Event()
    errors: list = []

    def call_forever():
        while not stop.is_set():
            try:
                assert func(12) == 144
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=call_forever) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            instrument(func, rec.on_enter, rec.on_exit)
            restore(func)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert func.__code__ is original
    rec.assert_balanced()


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("untraced", [False, True], ids=["traced", "untraced"])
def test_settrace_sees_the_same_events(case, recorder, untraced):
    func = case.target()
    if untraced:  # on_enter returns None: the jumps over the other probes add no line event
        recorder = UntracingRecorder()

    def traced_events():
        events = []

        def tracer(frame, event, arg):
            if frame.f_code is func.__code__ or frame.f_code is original_code(func):
                events.append((event, frame.f_lineno))
                return tracer
            return None  # the probes and everything else are not ours to compare

        sys.settrace(tracer)
        try:
            outcome(case.drive)
        finally:
            sys.settrace(None)
        return events

    expected = traced_events()
    recorder.install(func)
    try:
        actual = traced_events()
    finally:
        restore(func)
    # Untraced, no exit shows whether an exception left the frame: any exception event will do.
    raised = untraced and any(event == "exception" for event, _ in expected)
    if sys.version_info < (3, 10) and (raised or any(e[3] is not None
                                                     for e in recorder.of("exit"))):
        # 3.9 forces a line event after every jump to a handler, ours included (a known, harmless
        # difference: the extra event is on a line the function did execute).
        pytest.skip("3.9: exception exits add a line event")
    assert actual == expected
