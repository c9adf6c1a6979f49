"""A small Flask app with Redis and sqlite3: ``python -m ddagent examples/flask_app.py``.

Nothing in it mentions tracing: the launcher traces each request (``flask.request``), the
sqlite3 queries and the Redis commands on its own. Run as above, it sends itself a few requests
through Flask's test client, one of which fails, and exits, so the summary shows them all.
``--serve [PORT]`` serves it on 127.0.0.1 instead (default port 5000, Ctrl-C to stop).

Redis is optional: without a server on 127.0.0.1:6379 the view counts are skipped.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile

from flask import Flask, abort, jsonify

try:
    import redis
except ImportError:  # the example still runs, without view counts
    redis = None

DB_PATH = os.path.join(tempfile.mkdtemp(prefix="ddagent-example-"), "notes.db")

app = Flask(__name__)


def db() -> sqlite3.Connection:
    return sqlite3.connect(DB_PATH)


def count_view(note_id: int) -> int | None:
    if redis is None:
        return None
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.2)
    try:
        return int(client.incr(f"example:note:{note_id}:views"))
    except redis.exceptions.ConnectionError:
        return None


@app.route("/notes")
def list_notes():
    with db() as conn:
        rows = conn.execute("SELECT id, title FROM notes ORDER BY id").fetchall()
    return jsonify([{"id": i, "title": title} for i, title in rows])


@app.route("/notes/<int:note_id>")
def show_note(note_id: int):
    with db() as conn:
        row = conn.execute("SELECT title, body FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        abort(404)
    return jsonify({"title": row[0], "body": row[1], "views": count_view(note_id)})


@app.route("/crash")
def crash():
    raise RuntimeError("this view always fails, to show an error in the trace")


def create_db() -> None:
    with db() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, title, body)")
        conn.executemany("INSERT INTO notes (title, body) VALUES (?, ?)",
                         [("hello", "first note"), ("tracing", "every request is a trace")])


def demo() -> None:
    app.logger.disabled = True  # /crash fails on purpose: the trace shows it, not a traceback
    client = app.test_client()
    for path in ("/notes", "/notes/1", "/notes/2", "/notes/1", "/notes/99", "/crash"):
        with client.get(path) as response:  # closing the response ends the request
            print(f"GET {path} -> {response.status_code}")


if __name__ == "__main__":
    create_db()
    if sys.argv[1:2] == ["--serve"]:
        app.run(host="127.0.0.1", port=int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
    else:
        demo()
