"""``python -m ddagent``: programs run exactly as under plain python, plus tracing.

Every test runs real interpreters: once as ``python <program>`` and once as
``python -m ddagent <program>``, and compares what the program saw and did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testagent import REPO

APPS = Path(__file__).resolve().parent / "launcher_apps"


def env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    environ["PYTHONPATH"] = str(REPO)
    environ["DD_TRACE_AGENT_URL"] = "http://127.0.0.1:9"  # nothing listens: no spans expected
    environ.update(extra)
    return environ


def run(*args: str, launcher: bool, cwd: Path = APPS, stdin: str = "", **extra_env: str):
    prefix = [sys.executable, "-m", "ddagent"] if launcher else [sys.executable]
    return subprocess.run(
        [*prefix, *args],
        cwd=cwd,
        env=env(**extra_env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_both(*args: str, **kwargs):
    return run(*args, launcher=False, **kwargs), run(*args, launcher=True, **kwargs)


def assert_same(plain, traced) -> None:
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )


@pytest.mark.parametrize(
    "script", ["report.py", str(APPS / "report.py"), "../launcher_apps/report.py"]
)
def test_script_sees_what_plain_python_gives_it(script):
    plain, traced = run_both(script, "arg one", "--service", "-m", stdin="from stdin\n")
    assert_same(plain, traced)
    facts = json.loads(traced.stdout.split("\natexit:")[0])
    assert facts["argv"] == [script, "arg one", "--service", "-m"]
    assert facts["path0"] == str(APPS)
    assert facts["main"]["__spec__"] is None and facts["main"]["is_this_module"]
    assert facts["stdin"] == "from stdin\n"  # the launcher left stdin to the program
    assert traced.stdout.endswith("atexit: the program's own __main__ 2\n")


def test_symlinked_script_gets_the_real_directory_on_sys_path(tmp_path):
    link = tmp_path / "link.py"
    link.symlink_to(APPS / "report.py")
    plain, traced = run_both(str(link), cwd=tmp_path)
    assert_same(plain, traced)
    assert json.loads(traced.stdout.split("\natexit:")[0])["path0"] == str(APPS)


def test_module_runs_like_python_dash_m():
    plain, traced = run_both("-m", "report", "x", "-y")
    assert_same(plain, traced)
    facts = json.loads(traced.stdout.split("\natexit:")[0])
    assert facts["argv"] == [str(APPS / "report.py"), "x", "-y"]
    assert facts["path0"] == str(APPS)
    assert facts["main"]["__spec__"] == ["report", str(APPS / "report.py")]


def test_package_with_dunder_main_runs_like_python_dash_m():
    plain, traced = run_both("-m", "pkgmain", "a")
    assert_same(plain, traced)
    assert "pkgmain.__main__" in traced.stdout


def test_directory_with_dunder_main_runs_like_python_dir():
    plain, traced = run_both("pkgmain", "a")
    assert_same(plain, traced)


@pytest.mark.parametrize("kind", ["code", "message", "raise", "raise-from-thread-after"])
def test_exit_codes_and_uncaught_exception_output_match(kind):
    plain, traced = run_both("exits.py", kind)
    assert_same(plain, traced)
    assert plain.returncode == {"code": 3}.get(kind, 1)
    assert "ddagent" not in traced.stderr


@pytest.mark.parametrize("kind", ["code", "raise"])
def test_module_exit_codes_and_uncaught_exception_output_match(kind):
    assert_same(*run_both("-m", "exits", kind))


def test_keyboard_interrupt_still_ends_the_process_by_sigint():
    plain, traced = run_both("exits.py", "interrupt")
    assert plain.returncode == traced.returncode == -2
    assert traced.stderr.endswith(plain.stderr.splitlines()[-1] + "\n")


def test_missing_module_and_missing_script_are_reported_as_python_does():
    assert_same(*run_both("-m", "no_such_module_here"))
    assert_same(*run_both("no_such_script.py"))


def test_two_hundred_modules_import_the_same_under_the_launcher_while_watched():
    plain, traced = run_both(str(APPS / "module_facts.py"))
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout
    facts = json.loads(plain.stdout)
    assert len(facts) >= 200
    assert "callbacks run: 0" in plain.stderr
    assert "callbacks run: 0" not in traced.stderr  # the finder really watched them


def test_service_and_env_options_reach_the_program(tmp_path):
    script = tmp_path / "print_service.py"
    script.write_text("import os; print(os.environ['DD_SERVICE'], os.environ['DD_ENV'])\n")
    result = run("--service", "shop", "--env=staging", str(script), launcher=True)
    assert result.stdout == "shop staging\n", result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "report.py"], "unrecognized arguments: --bogus"),
        ([], "a script or -m module to run is required"),
        (["-m"], "argument -m: expected a module name"),
        (["--service"], "argument --service: expected one argument"),
    ],
)
def test_bad_command_lines_print_usage_and_exit_2(args, message):
    result = run(*args, launcher=True)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m ddagent [options] (script.py | -m module)")
    assert message in result.stderr and result.stdout == ""


def test_help_and_version():
    help_ = run("--help", launcher=True)
    assert help_.returncode == 0 and "--info" in help_.stdout and "--service NAME" in help_.stdout
    version = run("--version", launcher=True)
    assert version.returncode == 0 and version.stdout.startswith("ddagent ")


def test_info_reports_configuration_agent_and_integrations(test_agent):
    result = run("--info", launcher=True, DD_TRACE_AGENT_URL=test_agent.url, DD_ENV="qa")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "env = 'qa'  (env DD_ENV)" in out
    assert f"Agent: {test_agent.url} answers" in out
    assert "Integrations:" in out and "sqlite3" in out


def test_info_says_when_the_agent_does_not_answer():
    result = run("--info", launcher=True)
    assert result.returncode == 0
    assert "Agent: http://127.0.0.1:9 does not answer" in result.stdout


def test_import_auto_traces_child_processes_and_keeps_pythonpath(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import json, os\n"
        "import ddagent.auto\n"
        "print(json.dumps(os.environ['PYTHONPATH'].split(os.pathsep)))\n"
        "import ddagent.auto\n"  # again: nothing more happens
        "print(json.dumps(os.environ['PYTHONPATH'].split(os.pathsep)))\n"
    )
    result = run(str(script), launcher=False)
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == second == [str(REPO / "ddagent" / "bootstrap"), str(REPO)], result.stderr


def test_a_missing_registry_does_not_break_the_program(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import sys\n"
        "sys.modules['ddagent.hooks.registry'] = None  # importing it now raises ImportError\n"
        "import ddagent.auto\n"
        "print('still running')\n"
    )
    result = run(str(script), launcher=False)
    assert result.returncode == 0 and result.stdout == "still running\n"
    assert "could not install the integrations" in result.stderr


@pytest.mark.parametrize("launcher", [False, True])
def test_subprocess_and_multiprocessing_children_are_traced(launcher, tmp_path):
    user_site = tmp_path / "user_site"
    user_site.mkdir()
    (user_site / "sitecustomize.py").write_text("USER_MARK = 'user sitecustomize ran'\n")
    result = run(
        "children.py",
        launcher=launcher,
        PYTHONPATH=os.pathsep.join([str(REPO), str(user_site)]),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["self"] is launcher
    # In the child: traced or not, the shadowed sitecustomize ran, and our bootstrap directory
    # is not left on sys.path.
    assert report["subprocess"] == [launcher, "user sitecustomize ran", False]
    assert report["spawn"] is launcher and report["spawn_exitcode"] == 0
