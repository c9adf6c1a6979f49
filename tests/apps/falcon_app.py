"""A small Falcon application for the integration tests."""

import falcon

from ddagent import tracer


class UserResource:
    def on_get(self, req, resp, user_id):
        resp.media = {"id": user_id}


class FailResource:
    def on_get(self, req, resp):
        raise ValueError("the responder failed")


class StreamResource:
    def on_get(self, req, resp):
        def chunks():
            for i in range(3):
                with tracer.trace("stream.chunk"):
                    yield b"%d\n" % i

        resp.stream = chunks()


def make_app(**kwargs):
    app = falcon.App(**kwargs)
    app.add_route("/users/{user_id:int}", UserResource())
    app.add_route("/fail", FailResource())
    app.add_route("/stream", StreamResource())
    return app


app = make_app()
