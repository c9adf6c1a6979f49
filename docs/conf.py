"""Sphinx configuration: ``python -m sphinx -W docs docs/_build`` (tests/test_docs.py runs it)."""

import os
import sys

# Document the checkout itself, whether or not ddagent is installed in this environment.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ddagent.version import __version__  # noqa: E402

project = "ddagent"
author = "ddagent contributors"
copyright = "ddagent contributors"
version = release = __version__

extensions = ["sphinx.ext.autodoc"]

# architecture.md is the developers' contract file, read on GitHub or in an editor; the build
# takes reStructuredText only.
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
# Signatures show the hints as written (``Optional[str]``) instead of resolving every name.
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"ddagent {release}"
