"""Pyramid (the maintained successor of Pylons): ``pyramid.request`` spans from the WSGI layer.

- ``Router.__call__`` (the WSGI entry) runs inside the shared request span (``hooks/wsgi.py``):
  name ``pyramid.request``, type ``web``, status, errors, header extraction, streamed bodies.
- ``Router.finish_request``, which Pyramid calls after every request (also when the view
  raised), names the span after the matched route: resource ``GET <route name>``, tags
  ``http.route`` (the pattern) and ``pyramid.route.name``. No route: ``GET 404`` for a 404.
  A raised ``HTTPException`` keeps its own status (it is the response); any other exception
  that escapes Pyramid gives a 500 error.
- ``RendererHelper.render`` → ``pyramid.render`` (type ``template``) for renderer views.

Service: ``DD_PYRAMID_SERVICE``, else ``DD_SERVICE``, else ``pyramid``; ``Pin.override`` on a
``Router`` (the app ``Configurator.make_wsgi_app()`` returns) also works.
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks import wsgi
from ddagent.hooks.registry import FunctionProbe, Integration


def _name_after_route(integration: Integration, router: Any, request: Any) -> None:
    span = wsgi.request_span(getattr(request, "environ", {}))
    route = getattr(request, "matched_route", None)
    if span is not None and route is not None:
        wsgi.set_route(span, route.pattern, route.name)
        span.set_tag("pyramid.route.name", route.name)
    return None  # no span of its own


def _render_span(integration: Integration, helper: Any, *params: Any) -> Any:
    return integration.start_child_span("pyramid.render", span_type="template",
                                 resource=getattr(helper, "name", None) or "pyramid.render")


integration = Integration(
    "pyramid",
    service="pyramid",
    span_kind="server",
    probes=[
        wsgi.WSGIAppProbe("pyramid.router", "Router.__call__"),
        FunctionProbe("pyramid.router", "Router.finish_request", on_call=_name_after_route),
        FunctionProbe("pyramid.renderers", "RendererHelper.render", on_call=_render_span),
    ],
)
