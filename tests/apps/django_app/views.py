"""Views covering what the tracer must see: a template, the cache, sqlite and PostgreSQL
queries, the logged-in user, an exception (500) and a streamed body."""

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views import View


def timing_middleware(get_response):
    """A function-style middleware (Django's other kind, besides MiddlewareMixin classes)."""

    def middleware(request):
        return get_response(request)

    return middleware


def index(request):
    cache.set("greeting", "hello")
    greeting = cache.get("greeting")
    with connections["default"].cursor() as cursor:
        cursor.execute("select 1")
    return render(request, "index.html", {"greeting": greeting})


def user_detail(request, pk):
    with connections["postgres"].cursor() as cursor:
        cursor.execute("select %s", [pk])
        (value,) = cursor.fetchone()
    return JsonResponse({"pk": value, "user": str(request.user),
                         "authenticated": request.user.is_authenticated})


def boom(request):
    raise ValueError("the view failed")


def stream(request):
    def body():
        yield b"first,"
        with connections["default"].cursor() as cursor:
            cursor.execute("select 2")
        yield b"second"

    return StreamingHttpResponse(body())


class ClassView(View):
    def get(self, request):
        return HttpResponse("class-based")


async def async_view(request):
    """An async view: runs on the event loop under ASGI, with a sync query through asgiref."""

    def query():
        with connections["default"].cursor() as cursor:
            cursor.execute("select 3")

    await sync_to_async(query)()
    return HttpResponse("async")


async def async_boom(request):
    raise ValueError("the async view failed")
