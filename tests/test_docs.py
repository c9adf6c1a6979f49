"""The documentation builds without a single warning: ``python -m sphinx -W docs docs/_build``.

Sphinx imports every module the API pages document (``ddagent``, ``ddagent.hooks.*``), so this
also catches a docstring whose reStructuredText is broken, a page left out of the table of
contents, and a cross-reference to something that was renamed.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is not installed (tests/requirements.txt has it)")

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    # The build directory is a temporary one so that parallel runs and the source tree stay
    # clean; -E rereads every page, --keep-going reports every warning, not just the first.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", str(DOCS),
         str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "index.html").exists()
