"""A small Flask application for the integration tests (test client and gunicorn).

Routes: ``/`` (text), ``/users/<int:user_id>`` (a template), ``/fail`` (a view raising),
``/teapot`` (an exception turned into 418 by an error handler), ``/stream`` (a streamed body
whose chunks are traced), ``/backend`` (Redis and sqlite3 queries; Redis at $REDIS_URL),
``/file`` (this file, through ``send_file`` and the server's ``wsgi.file_wrapper``).
It has a function for each of Flask's hook phases, so each phase has its span.
"""

import os
import sqlite3

import jinja2
import redis
from flask import Flask, Response, render_template, send_file, stream_with_context

from ddagent import tracer

app = Flask(__name__)
app.jinja_loader = jinja2.DictLoader({"user.html": "<p>user {{ user_id }}</p>"})


@app.before_request
def before():
    pass


@app.after_request
def after(response):
    return response


@app.teardown_request
def teardown_request(error):
    pass


@app.teardown_appcontext
def teardown_appcontext(error):
    pass


class Teapot(Exception):
    pass


@app.errorhandler(Teapot)
def teapot(error):
    return "short and stout", 418


@app.route("/")
def index():
    return "hello"


@app.route("/users/<int:user_id>")
def user(user_id):
    return render_template("user.html", user_id=user_id)


@app.route("/fail")
def fail():
    raise ValueError("the view failed")


@app.route("/teapot")
def brew():
    raise Teapot()


@app.route("/stream")
def stream():
    def chunks():
        for i in range(3):
            with tracer.trace("stream.chunk"):
                yield f"{i}\n"

    return Response(stream_with_context(chunks()), mimetype="text/plain")


@app.route("/backend")
def backend():
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    client.set("ddagent:flask", "1")
    value = client.get("ddagent:flask")
    conn = sqlite3.connect(":memory:")
    conn.execute("select 1")
    conn.close()
    return f"redis={value.decode()}"


@app.route("/file")
def this_file():
    return send_file(__file__, mimetype="text/plain")
