"""A small CQL native-protocol (v4) server for the cassandra-driver tests.

No Cassandra server can be installed on the project's machines. This stand-in runs in threads
of the test process on ``127.0.0.1`` and a free port, speaks protocol v4 frames (no compression)
and keeps no data: tests register the rows a SELECT returns (:meth:`CqlStandin.add_rows`) and
the errors a statement gets (:meth:`CqlStandin.add_error`). Every statement it receives is
recorded (``.statements``: (opcode name, CQL text, consistency)), and a reply can be held back
until the test releases it (:meth:`CqlStandin.hold`).

What it imitates, as far as cassandra-driver 3.x needs for ``Cluster().connect()`` and queries:
OPTIONS/SUPPORTED, STARTUP/READY, REGISTER/READY; the ``system.local`` row and an empty
``system.peers`` (``system.peers_v2`` answers "unconfigured table" so the driver falls back);
empty results for the schema tables; QUERY and EXECUTE of prepared statements, with result
paging (``page_size`` and ``paging_state``); PREPARE (bind metadata: one varchar per ``?``);
BATCH; ``USE ks`` (SetKeyspace); INSERT/UPDATE/DELETE/DDL (Void); ERROR replies. A client
asking for another protocol version gets the real server's "unsupported protocol version"
error, after which the driver steps down to v4.
What it does not: storage, CQL parsing beyond ``USE`` and the table name of a SELECT, types
other than varchar/int/uuid/inet/boolean/set<varchar> in rows, schema-change events,
authentication, compression, protocol v5 framing, tracing, more than one node.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import struct
import threading
import uuid
from typing import Any, Iterator

VERSION = 4
# Opcodes.
ERROR, STARTUP, READY, OPTIONS, SUPPORTED, QUERY, RESULT, PREPARE, EXECUTE, REGISTER, BATCH = (
    0x00, 0x01, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0D)
OPCODE_NAMES = {QUERY: "QUERY", EXECUTE: "EXECUTE", PREPARE: "PREPARE", BATCH: "BATCH"}
# Error codes.
PROTOCOL_ERROR, INVALID = 0x000A, 0x2200
# Column types (type option ids).
VARCHAR, INT, BOOLEAN, UUID, INET, SET = 0x000D, 0x0009, 0x0004, 0x000C, 0x0010, 0x0022

_LOCAL_COLUMNS = [
    ("key", VARCHAR, "local"), ("bootstrapped", VARCHAR, "COMPLETED"),
    ("broadcast_address", INET, "127.0.0.1"), ("cluster_name", VARCHAR, "ddagent-test"),
    ("cql_version", VARCHAR, "3.4.5"), ("data_center", VARCHAR, "dc1"),
    ("host_id", UUID, uuid.UUID(int=1)), ("listen_address", INET, "127.0.0.1"),
    ("native_protocol_version", VARCHAR, "4"),
    ("partitioner", VARCHAR, "org.apache.cassandra.dht.Murmur3Partitioner"),
    ("rack", VARCHAR, "rack1"), ("release_version", VARCHAR, "4.0.11"),
    ("rpc_address", INET, "127.0.0.1"), ("schema_version", UUID, uuid.UUID(int=2)),
    ("tokens", SET, ["0"]),
]
_PEER_COLUMNS = [("peer", INET), ("data_center", VARCHAR), ("host_id", UUID),
                 ("preferred_ip", INET), ("rack", VARCHAR), ("release_version", VARCHAR),
                 ("rpc_address", INET), ("schema_version", UUID), ("tokens", SET)]
_TABLE = re.compile(r"\bfrom\s+([\w.\"]+)", re.IGNORECASE)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def short(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def string(self) -> str:
        return self.take(self.short()).decode()

    def long_string(self) -> str:
        return self.take(self.int()).decode()

    def bytes(self) -> bytes | None:
        n = self.int()
        return None if n < 0 else self.take(n)

    def short_bytes(self) -> bytes:
        return self.take(self.short())

    def query_parameters(self) -> dict:
        """<consistency><flags>[values][page_size][paging_state][serial][timestamp]"""
        params: dict[str, Any] = {"consistency": self.short()}
        flags = self.byte()
        if flags & 0x01:
            for _ in range(self.short()):
                if flags & 0x40:
                    self.string()
                self.bytes()
        if flags & 0x04:
            params["page_size"] = self.int()
        if flags & 0x08:
            params["paging_state"] = self.bytes()
        return params


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _bytes(value: bytes | None) -> bytes:
    return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value


def _encode(kind: int, value: Any) -> bytes | None:
    if value is None:
        return None
    if kind == VARCHAR:
        return str(value).encode()
    if kind == INT:
        return struct.pack(">i", value)
    if kind == BOOLEAN:
        return b"\x01" if value else b"\x00"
    if kind == UUID:
        return value.bytes
    if kind == INET:
        return socket.inet_aton(value)
    if kind == SET:
        return struct.pack(">i", len(value)) + b"".join(_bytes(str(v).encode()) for v in value)
    raise ValueError(f"the stand-in cannot encode type {kind:#x}")


def _type_option(kind: int) -> bytes:
    return struct.pack(">H", kind) + (struct.pack(">H", VARCHAR) if kind == SET else b"")


def _rows(keyspace: str, table: str, columns: list[tuple[str, int]], rows: list[list],
          paging_state: bytes | None = None) -> bytes:
    flags = 0x0001 | (0x0002 if paging_state is not None else 0)
    body = struct.pack(">iii", 2, flags, len(columns))
    if paging_state is not None:
        body += _bytes(paging_state)
    body += _string(keyspace) + _string(table)
    for name, kind in columns:
        body += _string(name) + _type_option(kind)
    body += struct.pack(">i", len(rows))
    for row in rows:
        body += b"".join(_bytes(_encode(kind, value)) for (_, kind), value in zip(columns, row))
    return body


def _error(code: int, message: str) -> bytes:
    return struct.pack(">i", code) + _string(message)


class CqlStandin:
    """The server: ``.port``, ``add_rows(pattern, columns, rows)``, ``add_error(...)``."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so serve_forever notices close(); accept() would not
        self.port = self._listener.getsockname()[1]
        self.statements: list[tuple[str, str, int]] = []
        self._canned: list[tuple[re.Pattern, list[tuple[str, int]], list[list]]] = []
        self._errors: list[tuple[re.Pattern, int, str]] = []
        self._holds: list[tuple[re.Pattern, threading.Event]] = []
        self._prepared: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._closed = False

    def add_rows(self, pattern: str, columns: list[tuple[str, int]], rows: list[list]) -> None:
        """SELECTs matching ``pattern`` (a regex, searched) return these rows."""
        with self._lock:
            self._canned.append((re.compile(pattern, re.IGNORECASE), columns, rows))

    def add_error(self, pattern: str, code: int, message: str) -> None:
        """Statements matching ``pattern`` get an ERROR reply."""
        with self._lock:
            self._errors.append((re.compile(pattern, re.IGNORECASE), code, message))

    def hold(self, pattern: str) -> threading.Event:
        """Statements matching ``pattern`` are answered only once the returned event is set."""
        release = threading.Event()
        with self._lock:
            self._holds.append((re.compile(pattern, re.IGNORECASE), release))
        return release

    # -- serving ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="cql-standin-conn").start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                header = _recv_exactly(conn, 9)
                if header is None:
                    return
                version, _flags, stream, opcode, length = struct.unpack(">BBhBi", header)
                body = _recv_exactly(conn, length) if length else b""
                if version != VERSION:
                    reply = (ERROR, _error(PROTOCOL_ERROR, (
                        f"Invalid or unsupported protocol version ({version}); "
                        "supported versions are (3/v3, 4/v4)")))
                    version_out = version
                else:
                    reply = self._answer(opcode, _Reader(body or b""))
                    version_out = VERSION
                reply_opcode, reply_body = reply
                conn.sendall(struct.pack(">BBhBi", 0x80 | version_out, 0, stream, reply_opcode,
                                         len(reply_body)) + reply_body)

    def _answer(self, opcode: int, reader: _Reader) -> tuple[int, bytes]:
        if opcode == OPTIONS:
            body = struct.pack(">H", 2) + _string("CQL_VERSION") + struct.pack(">H", 1) + \
                _string("3.4.5") + _string("COMPRESSION") + struct.pack(">H", 0)
            return SUPPORTED, body
        if opcode in (STARTUP, REGISTER):
            return READY, b""
        if opcode == QUERY:
            cql = reader.long_string()
            return self._run("QUERY", cql, reader.query_parameters())
        if opcode == EXECUTE:
            query_id = reader.short_bytes()
            cql = self._prepared.get(query_id)
            if cql is None:
                return ERROR, _error(0x2500, "Prepared query with ID not found")  # Unprepared
            return self._run("EXECUTE", cql, reader.query_parameters())
        if opcode == PREPARE:
            return self._prepare(reader.long_string())
        if opcode == BATCH:
            return self._batch(reader)
        return ERROR, _error(PROTOCOL_ERROR, f"unsupported opcode {opcode}")

    def _prepare(self, cql: str) -> tuple[int, bytes]:
        query_id = hashlib.md5(cql.encode()).digest()
        with self._lock:
            self._prepared[query_id] = cql
            self.statements.append(("PREPARE", cql, 0))
        markers = cql.count("?")
        # Prepared metadata: global table spec, no partition key indexes, a varchar per marker;
        # then "no result metadata".
        metadata = struct.pack(">iii", 0x0001, markers, 0) + _string("ks") + _string("t")
        metadata += b"".join(_string(f"p{i}") + _type_option(VARCHAR) for i in range(markers))
        result_metadata = struct.pack(">ii", 0x0004, 0)
        return RESULT, struct.pack(">i", 4) + struct.pack(">H", len(query_id)) + query_id + \
            metadata + result_metadata

    def _batch(self, reader: _Reader) -> tuple[int, bytes]:
        reader.byte()  # batch type
        texts = []
        for _ in range(reader.short()):
            kind = reader.byte()
            texts.append(reader.long_string() if kind == 0 else
                         self._prepared.get(reader.short_bytes(), "?"))
            for _ in range(reader.short()):
                reader.bytes()
        consistency = reader.short()
        with self._lock:
            self.statements.append(("BATCH", "; ".join(texts), consistency))
        for text in texts:
            error = self._error_for(text)
            if error is not None:
                return error
        return RESULT, struct.pack(">i", 1)

    def _error_for(self, cql: str) -> tuple[int, bytes] | None:
        with self._lock:
            for pattern, code, message in self._errors:
                if pattern.search(cql):
                    return ERROR, _error(code, message)
        return None

    def _run(self, opcode_name: str, cql: str, params: dict) -> tuple[int, bytes]:
        if not cql.lower().startswith("select * from system"):  # the driver's own queries
            with self._lock:
                self.statements.append((opcode_name, cql, params["consistency"]))
        with self._lock:
            holds = [release for pattern, release in self._holds if pattern.search(cql)]
        for release in holds:
            release.wait(10)
        error = self._error_for(cql)
        if error is not None:
            return error
        words = cql.strip().split()
        verb = words[0].lower() if words else ""
        if verb == "use":
            return RESULT, struct.pack(">i", 3) + _string(words[1].strip('";'))
        if verb != "select":
            return RESULT, struct.pack(">i", 1)  # Void
        table = (_TABLE.search(cql) or [None, "unknown.unknown"])[1].replace('"', "")
        keyspace, _, name = table.rpartition(".")
        if table == "system.peers_v2":
            return ERROR, _error(INVALID, "unconfigured table peers_v2")
        if table == "system.local":
            columns = [(n, kind) for n, kind, _ in _LOCAL_COLUMNS]
            return RESULT, _rows("system", "local", columns, [[v for *_, v in _LOCAL_COLUMNS]])
        if table == "system.peers":
            return RESULT, _rows("system", "peers", _PEER_COLUMNS, [])
        with self._lock:
            canned = [(c, r) for p, c, r in self._canned if p.search(cql)]
        columns, rows = canned[-1] if canned else ([("key", VARCHAR)], [])
        return RESULT, self._page(keyspace or "ks", name, columns, rows, params)

    @staticmethod
    def _page(keyspace: str, table: str, columns: list, rows: list, params: dict) -> bytes:
        start = int(params.get("paging_state") or b"0")
        page_size = params.get("page_size") or 0
        if page_size <= 0 or start + page_size >= len(rows):
            return _rows(keyspace, table, columns, rows[start:])
        end = start + page_size
        return _rows(keyspace, table, columns, rows[start:end], str(end).encode())


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@contextlib.contextmanager
def running_cassandra() -> Iterator[CqlStandin]:
    """Serve in a background thread; yield the server (``.port``); stop it afterwards."""
    server = CqlStandin()
    thread = threading.Thread(target=server.serve_forever, name="cql-standin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join()
