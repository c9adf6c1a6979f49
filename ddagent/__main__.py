"""``python -m ddagent [options] (script.py | -m module) [args...]``: run a program traced.

The program runs as ``python script.py args...`` / ``python -m module args...`` would run it:
``sys.argv``, ``sys.path[0]``, a new permanent ``__main__`` module with the same attributes
(``__spec__`` None for a script), the exit code, and an uncaught exception's output, from which
the launcher's own frames are trimmed (except for ``KeyboardInterrupt``, which is left to the
interpreter so the process still dies of SIGINT). The only difference: ``ddagent.auto`` is
imported first, which installs the integrations and traces child Python processes.

The module body is laid out like coverage.py's runner: a script is compiled and executed in a
fresh ``__main__`` module rather than through ``runpy.run_path``, which would put the launcher's
``__main__`` back when the script returns, before atexit handlers and non-daemon threads finish.
"""

from __future__ import annotations

import builtins
import os
import runpy
import sys
from importlib.machinery import BuiltinImporter, SourceFileLoader
from types import ModuleType, SimpleNamespace, TracebackType
from typing import TYPE_CHECKING, Callable, Optional

from ddagent.version import __version__

if TYPE_CHECKING:
    import argparse

# What _parser() gives for an empty option list, without building it.
_NO_OPTIONS = SimpleNamespace(service=None, env=None, info=False, summary=None, spans_file=None)

_OPTIONS_WITH_VALUE = ("--service", "--env", "--spans-file")


def _parser() -> argparse.ArgumentParser:
    # Built only when there are launcher options or a usage error: importing argparse and
    # building the parser cost ~7 ms of every start-up (cProfile of `-m ddagent -c pass`).
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ddagent",
        usage="%(prog)s [options] (script.py | -m module) [args ...]\n"
              "       %(prog)s [options] -c command [args ...]",
        description="Run a Python program with Datadog tracing installed before it starts.",
        epilog="Everything after the script or module name is passed to the program.",
        allow_abbrev=False,
    )
    parser.add_argument("--service", metavar="NAME", help="service name (sets DD_SERVICE)")
    parser.add_argument("--env", metavar="NAME", help="environment name (sets DD_ENV)")
    parser.add_argument(
        "--info",
        action="store_true",
        help="the same as `python -m ddagent doctor`: print the configuration, the agent's "
        "reachability and the integrations, and exit",
    )
    parser.add_argument(
        "--summary", action=argparse.BooleanOptionalAction, default=None,
        help="print what was traced at exit (DD_TRACE_SUMMARY; by default only in a terminal "
        "when no agent took the traces)",
    )
    parser.add_argument("--spans-file", metavar="PATH",
                        help="append every span to PATH as a JSON line (DD_TRACE_SPANS_FILE)")
    parser.add_argument("--version", action="version", version=f"ddagent {__version__}")
    return parser


def _split_command_line(
    parser: Callable[[], argparse.ArgumentParser], argv: list[str]
) -> tuple[list[str], Optional[str], Optional[str], list[str], Optional[str]]:
    """Split into (launcher options, script, module, program arguments, command).

    Options end at the first non-option word (the script), at ``-m module`` or at
    ``-c command``, as for the interpreter itself; everything after belongs to the program,
    even words that look like ours.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-c":
            if i + 1 == len(argv):
                parser().error("argument -c: expected a command")
            return argv[:i], None, None, argv[i + 2 :], argv[i + 1]
        if arg.startswith("-c"):  # -c'code', as the interpreter accepts it
            return argv[:i], None, None, argv[i + 1 :], arg[2:]
        if arg == "-m":
            if i + 1 == len(argv):
                parser().error("argument -m: expected a module name")
            return argv[:i], None, argv[i + 1], argv[i + 2 :], None
        if arg.startswith("-m") and not arg.startswith("--"):  # -mpackage.module
            return argv[:i], None, arg[2:], argv[i + 1 :], None
        if arg == "--":
            if i + 1 == len(argv):
                parser().error("expected a script after --")
            return argv[:i], argv[i + 1], None, argv[i + 2 :], None
        if not arg.startswith("-"):
            return argv[:i], arg, None, argv[i + 1 :], None
        i += 2 if arg in _OPTIONS_WITH_VALUE else 1
    return argv, None, None, [], None


def _new_main_module() -> ModuleType:
    main = ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    return main


def _set_sys_path0(entry: str) -> None:
    # With -P (3.11+) the interpreter prepends nothing, so there is nothing to replace.
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = entry


def _absolute(path: str) -> str:
    # The interpreter joins the cwd and the path as given, without normalizing "..".
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _run_script(path: str, args: list[str]) -> None:
    import zipfile  # here, not at the top: ~6 ms of every start-up otherwise

    sys.argv = [path, *args]
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        # A directory or zip archive runs its __main__.py, found through sys.path[0].
        _set_sys_path0(_absolute(path))
        _new_main_module()
        runpy._run_module_as_main("__main__", alter_argv=False)  # type: ignore[attr-defined]
        return
    absolute = _absolute(path)
    _set_sys_path0(os.path.dirname(os.path.realpath(path)))
    main = _new_main_module()
    main.__file__ = absolute
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__loader__ = SourceFileLoader("__main__", absolute)
    with open(absolute, "rb") as f:
        source = f.read()
    exec(compile(source, absolute, "exec", dont_inherit=True), main.__dict__)


def _run_module(name: str, args: list[str]) -> None:
    sys.argv = ["-m", *args]
    _set_sys_path0(os.getcwd())
    _new_main_module()
    # What the interpreter itself runs for `python -m`: it finds the module (or a package's
    # __main__), executes it in sys.modules["__main__"], sets sys.argv[0] to its path, and
    # reports "No module named ..." as python does.
    runpy._run_module_as_main(name, alter_argv=True)  # type: ignore[attr-defined]


def _run_command(code: str, args: list[str]) -> None:
    # As `python -c`: argv[0] is "-c", sys.path[0] is "" (the cwd, looked up at each import),
    # and the code runs as the file "<string>" in a __main__ without __file__.
    sys.argv = ["-c", *args]
    _set_sys_path0("")
    main = _new_main_module()
    main.__loader__ = BuiltinImporter  # type: ignore[attr-defined]
    exec(compile(code, "<string>", "exec", dont_inherit=True), main.__dict__)


def _program_traceback(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` without the launcher's own leading frames."""
    while tb is not None and tb.tb_frame.f_globals is globals():
        tb = tb.tb_next
    return tb


def _run_program(run: Callable[[], None]) -> int:
    """Run the program; report an uncaught exception as the interpreter would, minus our frames."""
    try:
        run()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        tb = _program_traceback(exc.__traceback__)
        exc = exc.with_traceback(tb)
        sys.excepthook(type(exc), exc, tb)
        return 1
    return 0


def _install_tracing() -> None:
    try:
        import ddagent.auto  # noqa: F401
    except Exception as exc:  # the program runs, untraced, rather than not at all
        print(f"ddagent: tracing not installed: {exc!r}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    option_args, script, module, program_args, command = _split_command_line(
        _parser, sys.argv[1:] if argv is None else argv
    )
    options = _parser().parse_args(option_args) if option_args else _NO_OPTIONS
    if options.service is not None:
        os.environ["DD_SERVICE"] = options.service
    if options.env is not None:
        os.environ["DD_ENV"] = options.env
    if options.info or script == "doctor":
        _install_tracing()  # so that "enabled" shows what a launched program would get
        from ddagent import doctor

        print(doctor.report(in_process=False))
        return 0
    if script is None and module is None and command is None:
        _parser().error("a script or -m module to run is required")

    if script is not None and not os.path.exists(script):
        # The interpreter's own wording and status for a missing script.
        print(f"{sys.executable}: can't open file {_absolute(script)!r}: "
              "[Errno 2] No such file or directory", file=sys.stderr)
        return 2

    from ddagent import summary

    # Before ddagent.auto, whose own (environment-only) install then does nothing.
    summary.install(options.summary, options.spans_file)
    _install_tracing()
    if script is not None:
        return _run_program(lambda: _run_script(script, program_args))
    if command is not None:
        return _run_program(lambda: _run_command(command, program_args))
    return _run_program(lambda: _run_module(module, program_args))  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
