"""Switch integrations on and off while the program runs.

``enable(name)`` instruments a library (now if it is imported, else when it is), ``disable(name)``
puts back the identical original code objects and attributes, so a disabled integration costs
nothing; ``status()`` lists every known integration. All three are safe at any time, from any
thread. Operators can do the same without code changes: see ``ddagent.hooks.control``.
"""

from ddagent.hooks.registry import PatchError, disable, enable, status

__all__ = ["PatchError", "disable", "enable", "status"]
