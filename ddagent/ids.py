"""Trace and span ids: 128-bit trace ids, 64-bit non-zero span ids.

A trace id is laid out as Datadog's tracers do: the top 32 bits are the creation time in unix
seconds, the next 32 bits are zero and the low 64 bits are random. Only the low 64 bits go in a
span's ``trace_id`` field on the wire; the high half travels as the ``_dd.p.tid`` tag.

The ids come from a private ``random.Random`` (not the app's global one, which the app may seed),
or with the native span core (ddagent/_span.c) from its own splitmix64 generator. Both are seeded
from ``os.urandom`` and reseeded in a forked child, so parent and child never produce the same ids.
"""

from __future__ import annotations

import os
import random

try:
    from ddagent import _span as _native
except ImportError:  # built without a C compiler: the Python span core draws from _rng
    _native = None

_rng = random.Random()
# The private generator's method (stays valid across the fork reseed). Span.__init__ makes the
# ids with it inline, as laid out above: a span id is ``getrandbits(64) or 1``.
getrandbits = _rng.getrandbits

LOW_64 = (1 << 64) - 1


def _reseed() -> None:
    # The child inherits the parent's generator state; without a reseed both would continue
    # the same sequence.
    _rng.seed()
    if _native is not None:
        _native.seed(os.urandom(8))


if _native is not None:
    _native.seed(os.urandom(8))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)
