"""The seed's custom-tracing example, runnable: ``python -m ddagent examples/thumbnails.py``.

A wrapped function with a nested span that carries a meta tag and a metric, plus a Redis call and
a sqlite3 query that the agent traces on its own. Redis is optional: without a server on
127.0.0.1:6379 the example skips it.
"""

import sqlite3
import time

from ddagent import tracer


def resize_image(img: bytes, size: int) -> bytes:
    time.sleep(0.001)
    return img[:size]


class ImageServer:
    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE thumbnails (size INTEGER, data BLOB)")

    def store(self, thumbnails: list) -> None:
        self.db.executemany(
            "INSERT INTO thumbnails VALUES (?, ?)", [(len(t), t) for t in thumbnails]
        )


image_server = ImageServer()


@tracer.wrap(service="thumbnailer")
def save_thumbnails(img: bytes, sizes: list) -> None:
    thumbnails = [resize_image(img, size) for size in sizes]

    with tracer.trace("thumbnails.save") as span:
        span.set_meta("thumbnails.sizes", str(sizes))
        span.set_metric("thumbnails.count", len(thumbnails))
        image_server.store(thumbnails)
    _count_in_redis(len(thumbnails))


def _count_in_redis(n: int) -> None:
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.2)
    try:
        client.incrby("thumbnails:saved", n)
    except redis.exceptions.ConnectionError:
        pass


if __name__ == "__main__":
    for i in range(5):
        save_thumbnails(b"x" * 4096, [64, 128, 256 * (i + 1)])
    print("saved 5 batches of thumbnails")
