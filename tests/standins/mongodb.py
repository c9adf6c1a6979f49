"""A MongoDB wire-protocol server for the pymongo and mongoengine tests: briskdb behind a proxy.

No real ``mongod`` can be installed on the project's machines (no package ships one; the
installers download it from MongoDB's site at run time). briskdb (PyPI) is a Rust engine with
a MongoDB wire-protocol listener and real query semantics; it runs inside the test process on
``127.0.0.1`` and a free port, with its data in a temporary directory.

What it imitates: OP_MSG commands with real results: hello, ping, insert, find (filters,
sort, getMore), update, delete, count, aggregate ($match/$group), createIndexes,
findAndModify, listCollections/listDatabases, and error replies (e.g. a duplicate key).
What it does not: replica sets, transactions, change streams, text search, authentication,
compression.

What is faked on top: briskdb answers the handshake with maxWireVersion 8 (MongoDB 4.2) and
refuses hello options it does not know, while pymongo 4.18+ requires at least wire version 9
(4.20: ``pymongo.common.MIN_SUPPORTED_WIRE_VERSION``) and adds ``backpressure`` to its hello.
So the driver talks to a small proxy in front of briskdb that changes two things, nothing
else: it removes the hello options briskdb refuses from the client's hello/isMaster, and it
raises ``maxWireVersion`` in the server's replies to the driver's minimum. The server does not
gain the features of that wire version; the tests use none of them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path
from typing import Callable, Iterator

OP_MSG = 2013
HELLO_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})
# hello options of newer drivers that briskdb answers with InvalidOptions.
UNKNOWN_HELLO_OPTIONS = ("backpressure",)
_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
_MAX_WIRE_VERSION_FIELD = b"\x10maxWireVersion\x00"  # BSON int32 element "maxWireVersion"


@contextlib.contextmanager
def running_mongodb(data_dir: Path) -> Iterator[str]:
    """Start the server; yield its ``mongodb://127.0.0.1:<port>`` URI; stop it afterwards."""
    import briskdb
    from pymongo.common import MIN_SUPPORTED_WIRE_VERSION

    database = briskdb.open(str(data_dir), shards=2, documents=True)
    server = database.serve(http="127.0.0.1:0", admin=None, mongo="127.0.0.1:0")
    host, port = server.mongo_address.rsplit(":", 1)
    proxy = _HandshakeProxy((host, int(port)), MIN_SUPPORTED_WIRE_VERSION)
    try:
        yield f"mongodb://127.0.0.1:{proxy.port}"
    finally:
        proxy.close()
        server.close()
        database.close()


class _HandshakeProxy:
    """Forwards whole wire-protocol messages both ways, rewriting only the handshake."""

    def __init__(self, upstream: tuple[str, int], min_wire_version: int) -> None:
        self.upstream = upstream
        self.min_wire_version = min_wire_version
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="mongodb-proxy", daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for source, target, rewrite in ((client, server, _strip_hello_options),
                                            (server, client, self._raise_wire_version)):
                threading.Thread(target=_pump, args=(source, target, rewrite),
                                 daemon=True).start()

    def _raise_wire_version(self, message: bytes) -> bytes:
        at = message.find(_MAX_WIRE_VERSION_FIELD)
        if at < 0:
            return message
        at += len(_MAX_WIRE_VERSION_FIELD)
        if struct.unpack_from("<i", message, at)[0] >= self.min_wire_version:
            return message
        patched = bytearray(message)
        struct.pack_into("<i", patched, at, self.min_wire_version)
        return bytes(patched)


def _pump(source: socket.socket, target: socket.socket,
          rewrite: Callable[[bytes], bytes]) -> None:
    with contextlib.suppress(OSError):
        while True:
            header = _read_exactly(source, _HEADER.size)
            if not header:
                break
            length = _HEADER.unpack(header)[0]
            target.sendall(rewrite(header + _read_exactly(source, length - _HEADER.size)))
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _strip_hello_options(message: bytes) -> bytes:
    """An OP_MSG hello/isMaster without UNKNOWN_HELLO_OPTIONS; every other message as is."""
    import bson

    _length, request_id, response_to, op_code = _HEADER.unpack_from(message)
    # A hello is flagBits 0, then one kind-0 section (0, the document), nothing after it.
    body_at = _HEADER.size + 5
    if (op_code != OP_MSG or message[_HEADER.size:body_at] != b"\0\0\0\0\0"
            or body_at + struct.unpack_from("<i", message, body_at)[0] != len(message)):
        return message
    command = bson.decode(message[body_at:])
    if next(iter(command), None) not in HELLO_COMMANDS:
        return message
    for option in UNKNOWN_HELLO_OPTIONS:
        command.pop(option, None)
    body = message[_HEADER.size:body_at] + bson.encode(command)
    return _HEADER.pack(_HEADER.size + len(body), request_id, response_to, op_code) + body
