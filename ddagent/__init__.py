"""ddagent: a Python tracing agent for Datadog.

``from ddagent import tracer`` gives the global tracer. ``patch``, ``patch_all`` and ``unpatch``
come from the import-hook registry, loaded on first use so that importing the core installs no
hook.
"""

from typing import Any

from ddagent.pin import Pin
from ddagent.span import Span
from ddagent.tracer import Tracer, tracer
from ddagent.version import __version__

__all__ = ["Pin", "Span", "Tracer", "__version__", "patch", "patch_all", "tracer", "unpatch"]

_FROM_REGISTRY = ("patch", "patch_all", "unpatch")


def __getattr__(name: str) -> Any:
    if name in _FROM_REGISTRY:
        from ddagent.hooks import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'ddagent' has no attribute {name!r}")
