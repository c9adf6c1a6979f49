"""Loaded by ``site`` at the start of every child Python process that inherits our PYTHONPATH.

It makes the child look as if it had not been touched, then traced:

1. removes its own directory from ``sys.path`` (the environment keeps it, for grandchildren);
2. makes sure ``ddagent`` itself is importable (appended last, so it shadows nothing);
3. imports ``ddagent.auto``; a failure is reported on stderr and the child runs untraced;
4. chain-loads the ``sitecustomize`` this file shadows, if there is one, as ``sitecustomize``:
   its errors reach ``site`` exactly as they would without us.
"""

import importlib.util
import os
import sys
from importlib.machinery import PathFinder

_BOOTSTRAP_DIR = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(_BOOTSTRAP_DIR))


def _load_ddagent() -> None:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _BOOTSTRAP_DIR]
    if importlib.util.find_spec("ddagent") is None:
        sys.path.append(_PACKAGE_PARENT)
    try:
        import ddagent.auto  # noqa: F401
    except Exception as exc:  # never keep the child from starting
        sys.stderr.write(f"ddagent: not tracing this process: {exc!r}\n")


def _chain_load_shadowed_sitecustomize() -> None:
    spec = PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # The import system re-reads sys.modules["sitecustomize"] when this file finishes, so the
    # shadowed module ends up registered under its own name, as without us.
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_load_ddagent()
_chain_load_shadowed_sitecustomize()
