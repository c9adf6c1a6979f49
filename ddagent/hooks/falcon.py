"""Falcon (3.x, 4.x; WSGI ``falcon.App`` and ASGI ``falcon.asgi.App``): a ``falcon.request``
span per request.

The request span comes from the shared WSGI layer (``hooks/wsgi.py``) around
``falcon.App.__call__``, or from the shared ASGI layer (``hooks/asgi.py``) around
``falcon.asgi.App.__call__`` (kept in ``req.scope`` there). Both apps route through the same
``App._get_responder``: once Falcon has routed the request, the span gets resource
``METHOD <module>.<ResourceClass>`` and tag ``http.route`` = the URI template; an unrouted
request is ``METHOD 404``. An exception a responder raises, which Falcon turns into a response
itself (``App._handle_exception``, a coroutine in the ASGI app), is recorded on the span unless
it is an HTTP error below 500 (``HTTPNotFound``...). Under ASGI, WebSocket connections and
lifespan events are not traced.

The seed's explicit ``TraceMiddleware(tracer, service="falcon")`` (a Falcon middleware) keeps
working in WSGI apps: with the automatic instrumentation on, it only applies its service;
without it, it traces the request itself from ``process_request`` to ``process_response`` (so a
streamed body is not covered, and an exception Falcon handled shows only as its status). It has
no coroutine methods, so ``falcon.asgi.App`` refuses it.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from ddagent.hooks.asgi import ASGIAppProbe
from ddagent.hooks.registry import FunctionProbe, Integration
from ddagent.hooks.wrappers import AroundProbe
from ddagent.hooks.wsgi import (
    WSGIAppProbe,
    finish_request,
    request_span,
    set_route,
    start_request,
)

_MIDDLEWARE_SPAN = "ddagent.falcon.middleware_span"  # environ key: the span the middleware owns


def _carrier(req: Any) -> dict:
    """Where the request's span is kept: the WSGI environ, or the ASGI scope of a
    ``falcon.asgi.Request`` (whose ``env`` raises AttributeError)."""
    env = getattr(req, "env", None)
    if isinstance(env, dict):
        return env
    scope = getattr(req, "scope", None)
    return scope if isinstance(scope, dict) else {}


def _name_request(req: Any, resource: Any, uri_template: Optional[str]) -> None:
    span = request_span(_carrier(req))
    if span is None or resource is None:
        return
    resource_class = type(resource)
    set_route(span, uri_template or req.path,
              f"{resource_class.__module__}.{resource_class.__qualname__}")


def _traced_get_responder(integration: Integration, wrapped: Callable, app: Any, args: tuple,
                          kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        _responder, _params, resource, uri_template = result
        _name_request(args[0] if args else kwargs["req"], resource, uri_template)
    except Exception as exc:
        integration.probe_failed(exc)
    return result


def _record_handled_exception(integration: Integration, app: Any, req: Any, resp: Any,
                              exc: BaseException, params: Any, ws: Any = None) -> None:
    # ``ws``: the ASGI app's coroutine takes the WebSocket too (None for HTTP requests).
    falcon = sys.modules["falcon"]
    span = request_span(_carrier(req))
    if span is None or isinstance(exc, falcon.HTTPStatus):
        return None
    # HTTPError.status_code is Falcon 4's; Falcon 3 has only .status ("404 Not Found", an int...).
    if isinstance(exc, falcon.HTTPError) and falcon.http_status_to_code(exc.status) < 500:
        return None
    span.set_exc_info(type(exc), exc, exc.__traceback__)
    return None  # no span of its own


class TraceMiddleware:
    """The seed's Falcon middleware: ``falcon.App(middleware=[TraceMiddleware(tracer)])``."""

    def __init__(self, tracer: Any = None, service: str = "falcon") -> None:
        self.tracer = tracer
        self.service = service

    def process_request(self, req: Any, resp: Any) -> None:
        span = request_span(req.env)
        if span is not None:  # the automatic instrumentation traces it: apply our service
            span.service = self.service
            return
        span = start_request(integration, req.env, tracer=self.tracer, service=self.service)
        if span is not None:
            req.env[_MIDDLEWARE_SPAN] = span

    def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:
        _name_request(req, resource, getattr(req, "uri_template", None))

    def process_response(self, req: Any, resp: Any, resource: Any,
                         req_succeeded: bool = True) -> None:
        span = req.env.pop(_MIDDLEWARE_SPAN, None)
        if span is not None:
            finish_request(span, integration, status=resp.status)


integration = Integration(
    "falcon",
    service="falcon",
    span_kind="server",
    probes=[
        WSGIAppProbe("falcon.app", "App.__call__"),
        AroundProbe("falcon.app", "App._get_responder", _traced_get_responder),
        FunctionProbe("falcon.app", "App._handle_exception", on_call=_record_handled_exception),
        ASGIAppProbe("falcon.asgi.app", "App.__call__"),
        FunctionProbe("falcon.asgi.app", "App._handle_exception",
                      on_call=_record_handled_exception),
    ],
)
