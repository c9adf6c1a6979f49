"""Packaging: the wheel and sdist build, the wheel works in a clean venv, the public API types.

The clean-venv test installs the wheel's dependencies with pip from the configured index; it
skips (saying why) when they cannot be installed, so a machine without an index still passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from ddagent.version import __version__
from tests.testagent import REPO

UNREACHABLE = "http://127.0.0.1:9"


def _clean_env(**extra: str) -> dict[str, str]:
    # Nothing from this checkout or its venv may leak into the clean one.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DD_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="the `build` package builds the wheel and sdist")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, env=_clean_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    # A platform wheel: it carries the native trace encoder built for this Python.
    (wheel,) = dist.glob(f"ddagent-{__version__}-*.whl")
    return wheel


def test_wheel_and_sdist_hold_the_package(dist):
    with zipfile.ZipFile(_wheel(dist)) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"ddagent-{__version__}.dist-info/entry_points.txt").decode()
    assert {"ddagent/py.typed", "ddagent/__main__.py", "ddagent/doctor.py",
            "ddagent/summary.py", "ddagent/bootstrap/sitecustomize.py",
            "ddagent/hooks/redis.py", "ddagent/writer/agent.py"} <= names
    assert not any(name.startswith(("tests/", "bench/", "examples/")) for name in names)
    for extension in ("ddagent/_span.", "ddagent/writer/_encoder."):
        assert any(name.startswith(extension) and name.endswith(".so") for name in names)
    assert "ddagent/_span.pyi" in names
    assert "ddagent = ddagent.__main__:main" in entry_points
    with tarfile.open(dist / f"ddagent-{__version__}.tar.gz") as tf:
        members = set(tf.getnames())
    assert f"ddagent-{__version__}/ddagent/py.typed" in members
    assert f"ddagent-{__version__}/ddagent/_span.c" in members
    assert f"ddagent-{__version__}/ddagent/writer/_encoder.c" in members
    assert f"ddagent-{__version__}/CHANGELOG.rst" in members


def test_wheel_in_a_clean_venv_runs_the_example_from_outside_the_repo(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    wheel = _wheel(dist)
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600, env=_clean_env())
    if install.returncode != 0:
        pytest.skip(f"pip could not install the wheel's dependencies: {install.stderr[-500:]}")

    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(REPO / "examples" / "thumbnails.py", work)
    env = _clean_env(DD_TRACE_AGENT_URL=UNREACHABLE)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], cwd=work, capture_output=True, text=True,
                              timeout=120, env=env)

    version = run("-m", "ddagent", "--version")
    assert version.stdout == f"ddagent {__version__}\n", version.stderr
    script = run(str(env_dir / "bin" / "ddagent"), "--version")  # the console script
    assert script.stdout == f"ddagent {__version__}\n", script.stderr

    example = run("-m", "ddagent", "--summary", "thumbnails.py")
    assert example.returncode == 0, example.stderr
    assert example.stdout == "saved 5 batches of thumbnails\n"
    assert "thumbnails.save" in example.stderr and "was not reached" in example.stderr
    assert str(REPO) not in example.stderr  # the installed copy ran, not this checkout

    doctor = run("-m", "ddagent", "doctor")
    assert doctor.returncode == 0 and f"Agent: {UNREACHABLE} does not answer" in doctor.stdout
    assert str(env_dir) in doctor.stdout  # the report names the clean interpreter
    # the wheel's compiled extensions load
    assert "Span core: native" in doctor.stdout and "Trace encoder: native" in doctor.stdout


def test_public_api_passes_mypy_strict():
    pytest.importorskip("mypy", reason="mypy checks the public API's types")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
