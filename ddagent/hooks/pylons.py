"""Pylons: the seed's ``PylonsTraceMiddleware(app, tracer, service="pylons")``.

**What is covered.** Pylons itself cannot be imported on Python 3 (its code is Python 2 syntax),
so nothing is instrumented automatically and nothing here imports Pylons. The middleware is a
plain WSGI middleware: wrap any WSGI application (a Pylons ``PylonsApp`` stack on a Python 2
port, or any Python 3 WSGI app) and every request becomes one ``pylons.request`` span (type
``web``) through the shared WSGI layer (``hooks/wsgi.py``): trace headers extracted, status and
5xx errors from ``start_response``, an escaping exception recorded as an error with
``getattr(exc, "code", 500)``, the span ending when the server closes the body.

When the wrapped stack contains Routes' ``RoutesMiddleware`` (as a Pylons app does), the
resource is ``<controller>.<action>`` from ``environ["pylons.routes_dict"]``, with tags
``pylons.route.controller`` and ``pylons.route.action``; without routing information it is the
WSGI layer's ``GET`` / ``GET 404``. ``pylons.user`` is ``REMOTE_USER`` (or empty).

**What is not covered.** No controller, template (``render_mako``…) or Pylons-internal spans:
those would need Pylons to run, which only CPython 2.7 can do. The span starts where the
middleware sits in the stack, so put it outermost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional

from ddagent.hooks import wsgi
from ddagent.hooks.registry import Integration

integration = Integration("pylons", service="pylons", span_kind="server", probes=[])


class PylonsTraceMiddleware:
    """Trace every request to the WSGI ``app`` as a ``pylons.request`` span (see the module)."""

    def __init__(self, app: Callable, tracer: Any = None, service: str = "pylons") -> None:
        self.app = app
        self._tracer = tracer
        self._service = service

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return wsgi.trace_wsgi_call(integration, self._routed_app, environ, start_response,
                                    tracer=self._tracer, service=self._service)

    def _routed_app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            body = self.app(environ, start_response)
        except BaseException as exc:
            _name_span(environ, getattr(exc, "code", None))
            raise
        _name_span(environ)
        return body


def _name_span(environ: dict, error_status: Optional[Any] = None) -> None:
    span = wsgi.request_span(environ)
    if span is None:
        return
    try:
        span.set_tag("pylons.user", environ.get("REMOTE_USER", ""))
        routes = environ.get("pylons.routes_dict")
        if isinstance(routes, dict):
            controller, action = routes.get("controller"), routes.get("action")
            span.resource = f"{controller}.{action}"
            span.set_tag("pylons.route.controller", controller)
            span.set_tag("pylons.route.action", action)
        if isinstance(error_status, int):
            span.set_tag("http.status_code", str(error_status))
    except Exception as error:
        integration.probe_failed(error)
