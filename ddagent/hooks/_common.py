"""Small value conversions that several integrations need, so each is written once."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """``value`` as a tag string: bytes decoded as UTF-8 (undecodable bytes escaped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)
