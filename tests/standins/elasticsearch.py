"""A small HTTP server that answers like Elasticsearch, for the elasticsearch-py tests.

No Elasticsearch server can be installed on the project's machines. This stand-in runs in a
thread of the test process (stdlib ``ThreadingHTTPServer``, HTTP/1.1, ``127.0.0.1``, a free
port) and records every request it gets (method, path, query, headers, JSON body).

What it imitates: the ``X-Elastic-Product: Elasticsearch`` header and the vendor content type
that clients 7.14+ check on every response; ``GET /`` (cluster info, version 8.15.0);
``PUT|POST /<index>/_doc[/<id>]`` (201 created); ``GET /<index>/_doc/<id>`` (found, for
documents indexed before); ``POST|GET /<index>/_search`` (every indexed document of the index
as hits, and ``took``); ``HEAD`` (200); anything else 404 ``index_not_found_exception``, and
``/_fail`` 500, with Elasticsearch's error body. What it does not: queries (a search returns
the whole index), mappings, aggregations, bulk, scroll, security, clusters of nodes.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import urlsplit

CONTENT_TYPE = "application/vnd.elasticsearch+json;compatible-with=8"


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict
    body: Any


class ElasticsearchStandin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Request] = []
        self.documents: dict[str, dict[str, Any]] = {}  # index -> id -> source
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ElasticsearchStandin

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        with self.server.lock:
            self.server.requests.append(
                Request(self.command, url.path, url.query, dict(self.headers), body))
            status, answer = self._answer(parts, body)
        self._send(status, answer)

    def _answer(self, parts: list[str], body: Any) -> tuple[int, Any]:
        method, docs = self.command, self.server.documents
        if method == "HEAD":
            return 200, None
        if not parts:
            return 200, {"name": "standin", "cluster_name": "ddagent-test",
                         "version": {"number": "8.15.0", "build_flavor": "default"},
                         "tagline": "You Know, for Search"}
        if parts == ["_fail"]:
            return 500, _error(500, "internal_server_error", "the stand-in was asked to fail")
        if len(parts) >= 2 and parts[1] == "_doc":
            index = parts[0]
            if method in ("PUT", "POST"):
                doc_id = parts[2] if len(parts) > 2 else str(sum(map(len, docs.values())) + 1)
                docs.setdefault(index, {})[doc_id] = body
                return 201, {"_index": index, "_id": doc_id, "_version": 1, "result": "created",
                             "_shards": {"total": 1, "successful": 1, "failed": 0},
                             "_seq_no": 0, "_primary_term": 1}
            if method == "GET" and len(parts) == 3 and parts[2] in docs.get(index, {}):
                return 200, {"_index": index, "_id": parts[2], "_version": 1, "found": True,
                             "_source": docs[index][parts[2]]}
        if len(parts) == 2 and parts[1] == "_search" and parts[0] in docs:
            hits = [{"_index": parts[0], "_id": i, "_score": 1.0, "_source": s}
                    for i, s in docs[parts[0]].items()]
            return 200, {"took": 3, "timed_out": False,
                         "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                         "hits": {"total": {"value": len(hits), "relation": "eq"},
                                  "max_score": 1.0, "hits": hits}}
        return 404, _error(404, "index_not_found_exception", f"no such index [{parts[0]}]")

    def _send(self, status: int, answer: Any) -> None:
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def _error(status: int, kind: str, reason: str) -> dict:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


@contextlib.contextmanager
def running_elasticsearch() -> Iterator[ElasticsearchStandin]:
    """Serve in a background thread; yield the server (``.url``, ``.requests``); stop it."""
    server = ElasticsearchStandin()
    thread = threading.Thread(target=server.serve_forever, name="es-standin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
