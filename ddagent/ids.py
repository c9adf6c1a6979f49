"""Trace and span ids: 128-bit trace ids, 64-bit non-zero span ids.

A trace id is laid out as Datadog's tracers do: the top 32 bits are the creation time in unix
seconds, the next 32 bits are zero and the low 64 bits are random. Only the low 64 bits go in a
span's ``trace_id`` field on the wire; the high half travels as the ``_dd.p.tid`` tag.

The ids come from a private ``random.Random`` (not the app's global one, which the app may seed)
that is reseeded in a forked child, so parent and child never produce the same ids.
"""

from __future__ import annotations

import os
import random
import time

_rng = random.Random()
# The private generator's method (stays valid across the fork reseed); Span inlines
# ``getrandbits(64) or 1`` instead of calling new_span_id, one Python call less per span.
getrandbits = _rng.getrandbits

LOW_64 = (1 << 64) - 1


def new_span_id() -> int:
    """A random non-zero 64-bit id."""
    return getrandbits(64) or 1


def new_trace_id() -> int:
    """A 128-bit trace id: unix seconds in the top 32 bits, zeros, then 64 random non-zero bits."""
    return (int(time.time()) << 96) | (getrandbits(64) or 1)


def _reseed() -> None:
    # The child inherits the parent's generator state; without a reseed both would continue
    # the same sequence.
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)
