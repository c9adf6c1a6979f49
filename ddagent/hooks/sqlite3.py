"""sqlite3 (standard library): ``sqlite.query`` spans through the shared DB-API layer.

``sqlite3.connect`` is a C function, so it is wrapped (``hooks/wrappers.py``) under both of its
names; the connections it returns are traced proxies (``hooks/dbapi.py``). sqlite has no network
peer, so the spans carry no host or port.
"""

from ddagent.hooks.dbapi import Database
from ddagent.hooks.registry import Integration

SQLITE = Database(span_name="sqlite.query", system="sqlite")

integration = Integration(
    "sqlite3",
    service="sqlite",
    component="sqlite",
    probes=[
        SQLITE.connect_probe("sqlite3.dbapi2"),
        SQLITE.connect_probe("sqlite3"),
    ],
)
