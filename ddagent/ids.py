"""Trace and span ids: 128-bit trace ids, 64-bit non-zero span ids.

A trace id is laid out as Datadog's tracers do: the top 32 bits are the creation time in unix
seconds, the next 32 bits are zero and the low 64 bits are random. Only the low 64 bits go in a
span's ``trace_id`` field on the wire; the high half travels as the ``_dd.p.tid`` tag.

The ids come from the native span core's splitmix64 generator (ddagent/_span.c), or where it is
not built from a private ``random.Random``; never from the app's global one, which the app may
seed. Either is seeded from ``os.urandom`` and reseeded in a forked child, so parent and child
never produce the same ids.
"""

from __future__ import annotations

import os

try:
    from ddagent import _span as _native
except ImportError:  # built without a C compiler
    _native = None

# random_bits(): 64 random bits; a span id is ``random_bits() or 1`` (see PythonSpanCore).
if _native is not None:
    # The native generator's (never zero): both span cores draw from it, and `random` (~2 ms
    # of start-up, -X importtime) is not imported.
    random_bits = _native.random_bits
else:
    import functools
    import random

    _rng = random.Random()
    random_bits = functools.partial(_rng.getrandbits, 64)

LOW_64 = (1 << 64) - 1


def _reseed() -> None:
    # From os.urandom: at import, and in a forked child, which inherits the parent's generator
    # state and without a reseed would continue the same sequence.
    if _native is not None:
        _native.seed(os.urandom(8))
    else:
        _rng.seed()


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)
