"""``python -m ddagent -c command``: runs the command as ``python -c command`` does."""

from __future__ import annotations

import pytest

from tests.test_launcher import assert_same, run_both

REPORT = (
    "import sys, __main__; "
    "print(sys.argv, repr(sys.path[0]), __main__.__spec__, hasattr(__main__, '__file__'), "
    "__main__.__loader__, __name__)"
)


@pytest.mark.parametrize("args", [["-c", REPORT], ["-c", REPORT, "a", "-m", "--service"],
                                  ["-c" + REPORT, "x"]])
def test_command_sees_what_plain_python_gives_it(args):
    assert_same(*run_both(*args))


@pytest.mark.parametrize("code", ["def f():\n    1 / 0\nf()", "raise SystemExit(3)",
                                  "import sys; sys.exit('bye')"])
def test_command_exit_status_and_traceback_match(code):
    assert_same(*run_both("-c", code))


def test_command_sees_the_working_directory_modules(tmp_path):
    (tmp_path / "local_mod.py").write_text("VALUE = 42\n")
    assert_same(*run_both("-c", "import local_mod; print(local_mod.VALUE)", cwd=tmp_path))
