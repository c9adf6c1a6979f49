"""Async middleware for the ASGI tests (Django's own are async-capable classes): the two
function styles, a class marked with ``markcoroutinefunction``, and one that raises."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.decorators import sync_and_async_middleware


@sync_and_async_middleware
def either_mode_middleware(get_response):
    """Async in an async chain, sync in a sync one: it follows ``get_response``."""
    if iscoroutinefunction(get_response):
        async def middleware(request):
            return await get_response(request)
    else:
        def middleware(request):
            return get_response(request)
    return middleware


def async_only_middleware(get_response):
    """An ``async def`` middleware that Django has to adapt for a sync chain."""

    async def middleware(request):
        return await get_response(request)

    return middleware


async_only_middleware.sync_capable = False
async_only_middleware.async_capable = True


class AsyncClassMiddleware:
    """A class-style async middleware: its instance is marked as a coroutine function."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        return await self.get_response(request)


def failing_middleware(get_response):
    """An async middleware that raises instead of calling the rest of the chain."""

    async def middleware(request):
        raise ValueError("the middleware failed")

    return middleware


failing_middleware.sync_capable = False
failing_middleware.async_capable = True
