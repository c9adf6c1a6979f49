"""A small Pyramid app: a JSON route, a raising view, a redirect and a streamed body."""

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response


def user(request):
    return {"id": int(request.matchdict["id"])}


def boom(request):
    raise ValueError("pyramid view failed")


def moved(request):
    raise HTTPFound(location="/users/1")


def stream(request):
    return Response(app_iter=iter([b"first,", b"second"]))


def make_app():
    with Configurator() as config:
        config.add_route("user", "/users/{id}")
        config.add_view(user, route_name="user", renderer="json")
        config.add_route("boom", "/boom")
        config.add_view(boom, route_name="boom")
        config.add_route("moved", "/moved")
        config.add_view(moved, route_name="moved")
        config.add_route("stream", "/stream")
        config.add_view(stream, route_name="stream")
        return config.make_wsgi_app()
