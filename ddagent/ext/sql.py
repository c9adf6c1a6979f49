"""SQL tags and the vendor-name normalization used for span names and services."""

from __future__ import annotations

from typing import Optional

TYPE = "sql"
QUERY = "sql.query"
ROWS = "sql.rows"
DB = "sql.db"


def normalize_vendor(vendor: Optional[str]) -> str:
    """The vendor part of ``<vendor>.query``: ``sqlite``, ``postgres``, ``db`` if unknown."""
    if not vendor:
        return "db"
    if "sqlite" in vendor:
        return "sqlite"
    if "postgres" in vendor or vendor == "psycopg2":
        return "postgres"
    return vendor
