"""The bytecode that ``rewrite.py`` injects, per CPython version (3.9–3.13).

``transform(code, probes)`` returns a new code object equivalent to::

    token = probes.on_enter((<parameters in co_varnames order>,))
    try:
        <body>       # every `return v` becomes: on_exit(token, v, None); return v
    except BaseException as e:
        on_exit(token, None, e); raise      # re-raised with the original f_lasti: same traceback

plus ``on_suspend(token)`` before and ``on_resume(token)`` after each plain ``yield``. Each of
these three probes is called only when ``token is not None``: a None token is on_enter's way of
leaving the call untraced, and the skipped call is ~0.9k instructions less per untraced call
(callgrind, Python 3.11).

Two layouts exist:

* 3.9/3.10 (block stack): one ``SETUP_FINALLY`` around the body. At a ``return`` the compiler has
  already unwound every other block, so a ``POP_BLOCK`` there pops ours.
* 3.11+ (exception table): a catch-all handler covers every instruction that no original table
  entry covers. Any exception leaving the frame leaves from such an instruction, because the
  original handlers end in an uncovered ``RERAISE``.

Synthetic instructions carry no line number (3.10+), or a neighbour's line on 3.9 (lnotab cannot
say "no line"), so tracebacks and ``sys.settrace`` line events stay as they were.
The ``return`` epilogue carries the ``return``'s own location so no extra line event fires there.
"""

from __future__ import annotations

import sys
from types import CodeType
from typing import Callable, NamedTuple, Optional

from bytecode import Bytecode, CellVar, Instr, Label, SetLineno, TryBegin, TryEnd
from bytecode.instr import InstrLocation

PY = sys.version_info[:2]

# The local that holds on_enter's token; a name no Python source can spell, so it never clashes.
TOKEN = ".ddagent_token"

# Deepest synthetic sequence above the stack depth it starts from: the 3.9/3.10 handler sits on
# the 6 items pushed for an exception and adds 4; the 3.11+ handler reaches 8.
_EXTRA_STACK = 10

# 3.9/3.10 keep at most CO_MAXBLOCKS (20) blocks per frame; ours is one more.
_MAX_BLOCKS = 20
_SETUP_OPS = frozenset({"SETUP_FINALLY", "SETUP_WITH", "SETUP_ASYNC_WITH"})

# 3.13 sets this RESUME bit after a yield that no handler but the implicit generator one covers;
# close() then finishes the generator without raising GeneratorExit inside it. With our handler
# around everything the bit would be wrong, so it is cleared.
_RESUME_DEPTH1 = 0x4
_RESUME_AFTER_YIELD = 1  # RESUME oparg & 3: 0 start, 1 yield, 2 yield from, 3 await

_NO_LOCATION = InstrLocation(None, None, None, None)


class Probes(NamedTuple):
    on_enter: Callable
    on_exit: Callable
    on_suspend: Optional[Callable]
    on_resume: Optional[Callable]


class CannotRewrite(Exception):
    """This code object has a shape the injector does not handle."""


def parameter_names(code: CodeType) -> tuple:
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # CO_VARARGS, CO_VARKEYWORDS
    return code.co_varnames[:count]


def transform(code: CodeType, probes: Probes) -> CodeType:
    bc = Bytecode.from_code(code, conserve_exception_block_stackdepth=True)
    body = [item for item in bc if not isinstance(item, SetLineno)]
    emit = _Emitter(code, probes)
    new_body = emit.with_table(body) if PY >= (3, 11) else emit.with_block(body)
    bc.clear()
    bc.extend(new_body)
    # Seeding argnames with every original local keeps co_varnames' order; the token comes last.
    bc.argnames = list(code.co_varnames)
    stacksize = max(code.co_stacksize + _EXTRA_STACK, len(parameter_names(code)) + 4)
    try:
        return bc.to_code(
            stacksize=stacksize, check_pre_and_post=False, compute_exception_stack_depths=False
        )
    except Exception as e:  # bytecode raises several types for assembly problems
        raise CannotRewrite(f"assembling failed: {e!r}") from e


class _Emitter:
    def __init__(self, code: CodeType, probes: Probes) -> None:
        self.code = code
        self.probes = probes

    # -- call sequences ------------------------------------------------------------------------

    def call(self, callee: Callable, args: list, loc, n: int = 0) -> list:
        """Instructions calling ``callee`` with ``args`` pushing ``n`` (default: one each) values,
        then dropping the result (stack-neutral)."""
        n = n or len(args)
        if PY >= (3, 13):
            seq = [Instr("LOAD_CONST", callee), Instr("PUSH_NULL"), *args, Instr("CALL", n)]
        elif PY >= (3, 12):
            seq = [Instr("PUSH_NULL"), Instr("LOAD_CONST", callee), *args, Instr("CALL", n)]
        elif PY >= (3, 11):
            seq = [Instr("PUSH_NULL"), Instr("LOAD_CONST", callee), *args]
            seq += [Instr("PRECALL", n), Instr("CALL", n)]
        else:
            seq = [Instr("LOAD_CONST", callee), *args, Instr("CALL_FUNCTION", n)]
        return _located([*seq, Instr("POP_TOP")], loc)

    def if_traced(self, seq: list, loc, checked: bool = False) -> list:
        """``seq`` (stack-neutral) preceded by a jump over it when the token is None."""
        skip = Label()
        token = self.load_token(checked)
        if PY >= (3, 12):
            test = [token, Instr("POP_JUMP_IF_NONE", skip)]
        elif PY >= (3, 11):
            test = [token, Instr("POP_JUMP_FORWARD_IF_NONE", skip)]
        else:
            test = [token, Instr("LOAD_CONST", None), Instr("IS_OP", 0),
                    Instr("POP_JUMP_IF_TRUE", skip)]
        return [*_located(test, loc), *seq, skip]

    def load_token(self, checked: bool = False) -> Instr:
        return Instr("LOAD_FAST_CHECK" if checked and PY >= (3, 12) else "LOAD_FAST", TOKEN)

    def prologue(self, loc) -> list:
        """token = on_enter((params...)) -- cell-captured parameters live in their cell."""
        loads = []
        for name in parameter_names(self.code):
            if name in self.code.co_cellvars:
                loads.append(Instr("LOAD_DEREF", CellVar(name)))
            else:
                loads.append(Instr("LOAD_FAST", name))
        loads.append(Instr("BUILD_TUPLE", len(loads)))
        seq = self.call(self.probes.on_enter, loads, loc, n=1)
        seq[-1] = Instr("STORE_FAST", TOKEN)  # keep the result instead of POP_TOP
        return _located(seq, loc)

    def exit_on_return(self, loc) -> list:
        """on_exit(token, <value on top of the stack>, None), leaving the value in place."""
        if PY >= (3, 11):
            # Stack: value, NULL, callee, token -> the value is 4th from the top.
            args = [self.load_token(), Instr("COPY", 4), Instr("LOAD_CONST", None)]
            return self.if_traced(self.call(self.probes.on_exit, args, loc), loc)
        seq = [Instr("DUP_TOP"), Instr("LOAD_CONST", self.probes.on_exit), Instr("ROT_TWO")]
        seq += [self.load_token(), Instr("ROT_TWO"), Instr("LOAD_CONST", None)]
        seq += [Instr("CALL_FUNCTION", 3), Instr("POP_TOP")]
        return self.if_traced(_located(seq, loc), loc)

    def yield_probe(self, probe: Optional[Callable], loc) -> list:
        """probe(token) around a plain yield, located on the yield's line; nothing if no probe."""
        if probe is None:
            return []
        return self.if_traced(self.call(probe, [self.load_token()], loc), loc)

    # -- 3.11+: exception table ----------------------------------------------------------------

    def with_table(self, body: list) -> list:
        out: list = []
        handler, cleanup = Label(), Label()
        ours: Optional[TryBegin] = None  # our currently open catch-all region
        in_original = 0  # original regions are flat: 0 or 1
        started = False

        def covered(*seq: Instr) -> None:
            """Emit original instructions, under our handler wherever no original one covers."""
            nonlocal ours
            if ours is None and started and in_original == 0:
                ours = TryBegin(handler, True, 0)
                out.append(ours)
            out.extend(seq)

        def close_ours() -> None:
            nonlocal ours
            if ours is not None:
                out.append(TryEnd(ours))
                ours = None

        for index, item in enumerate(body):
            if isinstance(item, TryBegin):
                close_ours()
                in_original += 1
                out.append(item)
            elif isinstance(item, TryEnd):
                in_original -= 1
                out.append(item)
            elif not isinstance(item, Instr):
                out.append(item)
            elif item.name == "RESUME":
                if PY >= (3, 13):
                    item.arg &= ~_RESUME_DEPTH1
                covered(item)
                if not started:
                    # The function's entry (for generators: the first resume).
                    out.extend(self.prologue(_NO_LOCATION))
                    started = True
                elif item.arg & 3 == _RESUME_AFTER_YIELD:
                    covered(*self.yield_probe(self.probes.on_resume, item.location))
            elif item.name == "YIELD_VALUE":
                if PY == (3, 12):
                    # 3.12's oparg is the handler depth; where close() reads it, 1 (only the
                    # implicit StopIteration handler) skips GeneratorExit. Ours is one more level.
                    item.arg += 1
                resume = _next_instr(body, index)
                if resume is not None and resume.arg & 3 == _RESUME_AFTER_YIELD:
                    covered(*self.yield_probe(self.probes.on_suspend, resume.location))
                covered(item)
            elif item.name in ("RETURN_VALUE", "RETURN_CONST") and started:
                loc = item.location
                if item.name == "RETURN_CONST":
                    covered(Instr("LOAD_CONST", item.arg, location=loc))
                    item = Instr("RETURN_VALUE", location=loc)
                close_ours()  # a raising on_exit must not reach our handler (on_exit twice)
                out.extend(self.exit_on_return(loc))
                out.append(item)
            else:
                covered(item)
        close_ours()
        if not started:
            raise CannotRewrite("no RESUME found")
        # handler: [lasti, exc] -> PUSH_EXC_INFO -> [lasti, prev_exc, exc]
        guarded = TryBegin(cleanup, True, 2)
        # Stack at COPY: lasti, prev_exc, exc, (NULL, callee | callee, NULL), token, None.
        args = [self.load_token(checked=True), Instr("LOAD_CONST", None), Instr("COPY", 5)]
        out += [handler, Instr("PUSH_EXC_INFO", location=_NO_LOCATION), guarded]
        out += self.if_traced(self.call(self.probes.on_exit, args, _NO_LOCATION), _NO_LOCATION,
                              checked=True)
        # RERAISE 2 puts f_lasti back to where the exception was raised: same traceback.
        out += [Instr("RERAISE", 2, location=_NO_LOCATION), TryEnd(guarded), cleanup]
        out += _located([Instr("COPY", 3), Instr("POP_EXCEPT"), Instr("RERAISE", 1)], _NO_LOCATION)
        return out

    # -- 3.9/3.10: block stack -----------------------------------------------------------------

    def with_block(self, body: list) -> list:
        instrs = [item for item in body if isinstance(item, Instr)]
        if not instrs:
            raise CannotRewrite("empty code")
        if sum(i.name in _SETUP_OPS for i in instrs) + 1 > _MAX_BLOCKS:
            raise CannotRewrite("too many blocks for one more SETUP_FINALLY")
        handler = Label()
        head: list = []
        rest = list(body)
        if instrs[0].name == "GEN_START":  # 3.10 generators: the span starts at first resume
            start = rest.index(instrs[0]) + 1
            head, rest = rest[:start], rest[start:]
        # The entry borrows the first body line: lnotab (3.9) cannot say "no line", and bytecode
        # 0.17 drops a 3.10 line entry that follows "no line" and repeats the previous real line.
        entry_loc = _line_of(next(i for i in rest if isinstance(i, Instr)))
        # The handler borrows the last line on 3.9 so entering it starts no new line.
        handler_loc = _NO_LOCATION if PY >= (3, 10) else _line_of(instrs[-1])
        out = head + self.prologue(entry_loc)
        out += _located([Instr("SETUP_FINALLY", handler)], entry_loc)
        for item in rest:
            if isinstance(item, Instr) and item.name == "RETURN_VALUE":
                loc = _line_of(item) if PY < (3, 10) else item.location
                out += _located([Instr("POP_BLOCK")], loc) + self.exit_on_return(loc)
                out.append(item)
            elif isinstance(item, Instr) and item.name == "YIELD_VALUE":  # only plain yields
                out += self.yield_probe(self.probes.on_suspend, item.location)
                out.append(item)
                out += self.yield_probe(self.probes.on_resume, item.location)
            else:
                out.append(item)
        # handler stack: prev_tb, prev_val, prev_type, tb, val, type. Bring val to the top
        # (keeping the six in place), build on_exit(token, None, val), then re-raise.
        seq = [Instr("ROT_TWO"), Instr("DUP_TOP"), Instr("ROT_THREE")]
        seq += [Instr("LOAD_CONST", self.probes.on_exit), Instr("ROT_TWO")]
        seq += [self.load_token(), Instr("ROT_TWO"), Instr("LOAD_CONST", None), Instr("ROT_TWO")]
        seq += [Instr("CALL_FUNCTION", 3), Instr("POP_TOP")]
        seq = self.if_traced(seq, handler_loc)
        # 3.10's RERAISE 1 restores f_lasti from the handler block: same traceback.
        seq.append(Instr("RERAISE", 1) if PY >= (3, 10) else Instr("RERAISE"))
        return out + [handler, *_located(seq, handler_loc)]


def _located(seq: list, loc) -> list:
    for instr in seq:
        if isinstance(instr, Instr):
            instr.location = loc
    return seq


def _line_of(instr: Instr):
    return InstrLocation(instr.lineno, None, None, None)


def _next_instr(body: list, index: int) -> Optional[Instr]:
    for item in body[index + 1 :]:
        if isinstance(item, Instr):
            return item
    return None
