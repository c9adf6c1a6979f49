"""Flask: a ``flask.request`` span per request, with sub-spans for what Flask does inside it.

The request span comes from the shared WSGI layer (``hooks/wsgi.py``) around ``Flask.wsgi_app``;
once Flask has matched the URL, ``full_dispatch_request`` names it: resource ``GET <url rule>``
(``GET /users/<int:id>``), tags ``http.route``, ``flask.url_rule``, ``flask.endpoint`` and
``flask.version``. An unmatched URL gives ``GET 404``. An exception Flask turns into a 500
(``handle_exception``) is recorded on the request span.

Sub-spans (no type unless said, tag ``component=flask``, the request's service):
``flask.preprocess_request``, the view ``<module>.<function>`` (resource = the rule),
``flask.process_response``, ``flask.handle_user_exception``, ``flask.handle_http_exception``,
``flask.handle_exception``, ``flask.do_teardown_request``, ``flask.do_teardown_appcontext``,
and ``flask.render_template`` (type ``template``, resource and tag ``flask.template_name`` = the
template's name) around ``render_template``/``render_template_string``.

The four hook phases (``preprocess_request``, ``process_response``, ``do_teardown_request``,
``do_teardown_appcontext``) get their span only when the app registered functions for them
(``before_request`` or ``url_value_preprocessor``, ``after_request``, ``teardown_request``,
``teardown_appcontext``): without any, the phase is Flask's own bookkeeping, a span timing
nothing that would cost about a sixth of a traced request (callgrind, a one-route app).

The seed's explicit :class:`TraceMiddleware` keeps working, with or without the automatic
instrumentation: the request is traced once, by the outermost layer (the middleware, with its
own tracer and service). Without the automatic instrumentation it names requests through
Flask's ``request_started`` signal and records unhandled exceptions through
``got_request_exception``, but gives no sub-spans.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from typing import Any, Callable, Optional

from ddagent.hooks.registry import FunctionProbe, Integration
from ddagent.hooks.wsgi import (
    REQUEST_SPAN,
    WSGIAppProbe,
    WSGITraceMiddleware,
    request_span,
    set_route,
)

_flask_version: Optional[str] = None


def _current_request() -> Any:
    """The request being handled, or None. The object itself, not the ``flask.request`` proxy:
    each attribute read through the proxy costs ~1 us, three of them per request."""
    request_context = getattr(sys.modules["flask.globals"], "_cv_request", None)  # Flask 2.2+
    if request_context is not None:
        context = request_context.get(None)
        return context.request if context is not None else None
    flask = sys.modules["flask"]
    return flask.request._get_current_object() if flask.has_request_context() else None


def _name_request(_integration: Any = None, _app: Any = None) -> None:
    """Tag the request span with the matched URL rule: the ``on_call`` of
    ``full_dispatch_request``, which starts no span of its own (it returns None)."""
    global _flask_version
    request = _current_request()
    # request.environ is a dict: request_span's check is not needed (a call less).
    span = request.environ.get(REQUEST_SPAN) if request is not None else None
    if span is None:
        return
    rule = request.url_rule
    meta = span.meta  # rules and the version are strs: set_tag's conversion is not needed
    if rule is not None:
        set_route(span, rule.rule)
        meta["flask.url_rule"] = rule.rule
        endpoint = rule.endpoint
        if type(endpoint) is str:
            meta["flask.endpoint"] = endpoint
        else:
            span.set_tag("flask.endpoint", endpoint)
    if _flask_version is None:
        _flask_version = importlib.metadata.version("flask")
    meta["flask.version"] = _flask_version


def _name_request_on_signal(_sender: Any, **_extra: Any) -> None:
    _name_request()


def _record_unhandled(_sender: Any, exception: BaseException, **_extra: Any) -> None:
    request = _current_request()
    span = request_span(request.environ) if request is not None else None
    if span is not None:
        span.set_exc_info(type(exception), exception, exception.__traceback__)


def _sub_span(name: str) -> Callable[..., Any]:
    def on_call(integration: Integration, *_params: Any) -> Any:
        return integration.start_child_span(name)

    return on_call


def _hook_phase(method: str, registered: Callable[[tuple], Any]) -> FunctionProbe:
    """The probe of the hook phase ``Flask.<method>``: its span ``flask.<method>`` exists only
    when ``registered(params)`` finds functions the app (``params[0]``) registered for it.

    Most apps have none for most phases, so that check runs before the probe protocol
    (``only_if``): ~3.3k instructions less a phase (callgrind, bench/flask_app.py). It reads
    the registries (``{blueprint or None: [functions]}``) as the phase itself does, as
    attributes: a ``getattr`` with a default would cost ~0.8k more a phase."""
    return FunctionProbe("flask.app", f"Flask.{method}", on_call=_sub_span(f"flask.{method}"),
                         only_if=registered)


def _view_span(integration: Integration, app: Any) -> Any:
    request = _current_request()
    rule = request.url_rule if request is not None else None
    view = app.view_functions.get(rule.endpoint) if rule is not None else None
    if view is None:  # routing failed: Flask raises the routing exception, handled as a 404
        return None
    name = f"{getattr(view, '__module__', None)}.{getattr(view, '__name__', rule.endpoint)}"
    return integration.start_child_span(name, resource=rule.rule)


def _unhandled_exception_span(integration: Integration, app: Any, exc: BaseException) -> Any:
    _record_unhandled(app, exc)
    return integration.start_child_span("flask.handle_exception")


def _template_span(integration: Integration, app: Any, template: Any, context: Any) -> Any:
    name = getattr(template, "name", None) or "<string>"
    span = integration.start_child_span("flask.render_template", resource=name,
                            span_type="template")
    if span is not None:
        span.set_tag("flask.template_name", name)
    return span


class TraceMiddleware:
    """The seed's explicit setup: ``TraceMiddleware(app, tracer, service="flask")``.

    Wraps ``app.wsgi_app``; ``use_signals`` is accepted for compatibility (the request is
    named through Flask's signals either way).
    """

    def __init__(self, app: Any, tracer: Any = None, service: str = "flask",
                 use_signals: bool = True) -> None:
        self.app = app
        self._tracer = tracer
        self._service = service
        app.wsgi_app = WSGITraceMiddleware(app.wsgi_app, integration, tracer, service)
        flask = importlib.import_module("flask")
        # Strong references: the handlers are module functions, connected once per app.
        flask.request_started.connect(_name_request_on_signal, sender=app, weak=False)
        flask.got_request_exception.connect(_record_unhandled, sender=app, weak=False)


integration = Integration(
    "flask",
    service="flask",
    span_kind="server",
    probes=[
        WSGIAppProbe("flask.app", "Flask.wsgi_app"),
        FunctionProbe("flask.app", "Flask.full_dispatch_request", on_call=_name_request),
        _hook_phase("preprocess_request", lambda params: (params[0].before_request_funcs
                                                          or params[0].url_value_preprocessors)),
        FunctionProbe("flask.app", "Flask.dispatch_request", on_call=_view_span),
        _hook_phase("process_response", lambda params: params[0].after_request_funcs),
        FunctionProbe("flask.app", "Flask.handle_user_exception",
                      on_call=_sub_span("flask.handle_user_exception")),
        FunctionProbe("flask.app", "Flask.handle_http_exception",
                      on_call=_sub_span("flask.handle_http_exception")),
        FunctionProbe("flask.app", "Flask.handle_exception", on_call=_unhandled_exception_span),
        _hook_phase("do_teardown_request", lambda params: params[0].teardown_request_funcs),
        _hook_phase("do_teardown_appcontext",
                    lambda params: params[0].teardown_appcontext_funcs),
        FunctionProbe("flask.templating", "_render", on_call=_template_span),
    ],
)
