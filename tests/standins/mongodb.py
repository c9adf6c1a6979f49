"""A MongoDB wire-protocol server for the pymongo and mongoengine tests: briskdb.

No real ``mongod`` can be installed on the project's machines (no package ships one; the
installers download it from MongoDB's site at run time). briskdb (PyPI) is a Rust engine with
a MongoDB wire-protocol listener and real query semantics; it runs inside the test process on
``127.0.0.1`` and a free port, with its data in a temporary directory.

What it imitates: OP_MSG commands with real results: hello, ping, insert, find (filters,
sort, getMore), update, delete, count, aggregate ($match/$group), createIndexes,
findAndModify, listCollections/listDatabases, and error replies (e.g. a duplicate key).
What it does not: replica sets, transactions, change streams, text search, authentication,
compression; it reports maxWireVersion 8, which pymongo ≥ 4.18 refuses (so the tests pin
pymongo below 4.18).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def running_mongodb(data_dir: Path) -> Iterator[str]:
    """Start the server; yield its ``mongodb://127.0.0.1:<port>`` URI; stop it afterwards."""
    import briskdb

    database = briskdb.open(str(data_dir), shards=2, documents=True)
    server = database.serve(http="127.0.0.1:0", admin=None, mongo="127.0.0.1:0")
    try:
        yield f"mongodb://{server.mongo_address}"
    finally:
        server.close()
        database.close()
