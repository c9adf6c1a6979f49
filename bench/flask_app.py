"""The Flask app of scenario 3: one route doing a little work, the same for every contender."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index() -> str:
    return "hello " + ",".join(str(i) for i in range(10))
