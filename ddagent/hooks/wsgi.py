"""The WSGI request layer that every web framework integration reuses.

One request is one span, ``<integration name>.request`` (type ``web``, ``span.kind=server``),
parent of everything the request does. This module owns that span's whole life (its start,
naming and end are shared with the ASGI layer, ``hooks/asgi.py``, through ``hooks/http.py``):

- **Start.** The trace context is extracted from the request headers (Datadog and W3C, through
  :class:`~ddagent.propagation.HTTPPropagator`); headers that do not parse give a fresh trace.
  Tags ``component``, ``span.kind``, ``http.method``, ``http.url`` (``scheme://host/path``, no
  query), ``http.useragent``; metric ``_dd.measured``.
- **Status.** Read from the application's ``start_response`` call (``http.status_code``, a
  string). Statuses in ``DD_TRACE_HTTP_SERVER_ERROR_STATUSES`` (5xx) mark the span as an error,
  4xx do not. An exception escaping the application is recorded and counts as a 500.
- **End.** When the server closes the response iterable (PEP 3333) or has read all of it, so a
  streamed body is covered (the span is active while the body is produced); at once if the
  application raises. A body made by the server's ``wsgi.file_wrapper`` (``send_file``,
  ``FileResponse``) is handed back as is, so the server can still ``sendfile()`` it; the span
  then ends when the server closes it.
- **Once.** The span is stored in ``environ[REQUEST_SPAN]``. A second layer for the same request
  (the seed's explicit middleware around an auto-instrumented app, one framework mounted in
  another) finds it there and starts nothing.
- **Resource.** ``METHOD route`` once the framework calls :func:`set_route`; otherwise
  ``METHOD 404`` for a 404 and ``METHOD`` alone.
- **Service.** An explicit ``service=`` (the seed's middlewares), else the app's Pin, else
  ``DD_<NAME>_SERVICE``, else ``DD_SERVICE``, else the integration's default (``flask``...).

How a framework module plugs in (``hooks/flask.py`` and ``hooks/falcon.py`` are examples):

1. Declare ``Integration(<name>, service=<name>, span_kind="server", probes=[...])``.
2. Probe the framework's WSGI entry point with ``WSGIAppProbe("<module>", "<Class>.<method>")``
   (a method taking ``(environ, start_response)``; the Pin is looked up on its ``self``).
   For the seed's explicit middlewares use :class:`WSGITraceMiddleware` (or
   :func:`trace_wsgi_call` directly), passing the user's ``tracer`` and ``service``.
3. Once the framework has routed the request, call ``set_route(request_span(environ), route)``
   and add the framework's own tags to that span. A framework that turns an exception into a
   500 response itself records it with ``span.set_exc_info(...)`` on the same span.
4. Sub-spans (view, template, error handler) come from ``integration.start_child_span``,
   called in a ``FunctionProbe``'s ``on_call``; they carry ``component`` and nothing of the
   root's tags.

:class:`WSGIAppProbe` is a :class:`~ddagent.hooks.wrappers.AroundProbe`: code rewriting can only
watch a call, and the WSGI entry must hand the application a wrapped ``start_response`` and the
server a wrapped body.
"""

from __future__ import annotations

import wsgiref.util
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional
from urllib.parse import quote

from ddagent.context import ACTIVE_SPAN
from ddagent.hooks.http import (
    PROPAGATION_HEADERS,
    REQUEST_SPAN,
    UNQUOTED,
    RequestFacts,
    base_url,
    finish_request,
    request_span,
    server_host,
    set_route,
    set_status,
    start_server_request,
    url_tag,
)
from ddagent.hooks.registry import Integration
from ddagent.hooks.wrappers import AroundProbe
from ddagent.span import Span

# The request span's helpers are shared with the ASGI layer (hooks/http.py); frameworks keep
# importing them from here.
__all__ = ["REQUEST_SPAN", "TracedBody", "WSGIAppProbe", "WSGITraceMiddleware", "finish_request",
           "request_span", "set_route", "start_request", "trace_wsgi_call"]

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


# -- the request span ------------------------------------------------------------------------


def start_request(
    integration: Integration,
    environ: dict,
    *,
    tracer: Any = None,
    service: Optional[str] = None,
    pin_from: object = None,
) -> Optional[Span]:
    """Start and activate the request span for ``environ``.

    Returns None when the request must not be traced here: another layer already traces it,
    the Pin or the tracer is disabled, or the layer itself failed (counted, logged).
    """
    return start_server_request(integration, environ, _read_environ, tracer=tracer,
                                service=service, pin_from=pin_from)


def _read_environ(environ: dict) -> RequestFacts:
    # Without a trace id or a traceparent there is no context: the usual request from an
    # untraced upstream reads no other header (and skips a Python call).
    propagated = "HTTP_X_DATADOG_TRACE_ID" in environ or "HTTP_TRACEPARENT" in environ
    return (environ.get("REQUEST_METHOD", "GET"), _url(environ), environ.get("HTTP_USER_AGENT"),
            _propagation_headers(environ) if propagated else None)


# The environ keys of the propagation headers (``x-datadog-trace-id`` -> HTTP_X_DATADOG_TRACE_ID).
_PROPAGATION_KEYS = {"HTTP_" + header.upper().replace("-", "_"): header
                     for header in PROPAGATION_HEADERS}


def _propagation_headers(environ: dict) -> dict:
    """The request's propagation headers."""
    return {header: environ[key] for key, header in _PROPAGATION_KEYS.items() if key in environ}


# What wsgiref's quote() leaves alone in PATH_INFO: a path made only of these is its own quoted
# form (see UNQUOTED).
_PATH_INFO_UNQUOTED = UNQUOTED + ";=,"


def _url(environ: dict) -> str:
    """The ``http.url`` tag: ``url_tag(wsgiref.util.request_uri(environ, include_query=False))``,
    with the scheme-and-host part computed once per host."""
    scheme = environ["wsgi.url_scheme"]
    # The Host header, which nearly every request has, without server_host's call.
    host = environ.get("HTTP_HOST") or server_host(
        scheme, None, environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", ""))
    script_name = environ.get("SCRIPT_NAME", "")
    if script_name and script_name[0] != "/":
        return _long_url(environ)
    base = base_url(scheme, host)
    if base is None:
        return _long_url(environ)
    # wsgiref's quoting of the path, so the tag reads exactly as before.
    path_info = environ.get("PATH_INFO", "")
    if path_info.strip(_PATH_INFO_UNQUOTED):  # strip() leaves something: a char to quote
        path_info = quote(path_info, safe="/;=,", encoding="latin1")
    if script_name:
        if script_name.strip(UNQUOTED):
            script_name = quote(script_name, encoding="latin1")
        return base + script_name + path_info
    return base + "/" + path_info[1:]


def _long_url(environ: dict) -> str:
    # For requests unusual enough that the host and path do not split where _url expects.
    return url_tag(wsgiref.util.request_uri(environ, include_query=False))


# -- running a WSGI application inside the request span -------------------------------------


def trace_wsgi_call(
    integration: Integration,
    app: WSGIApp,
    environ: dict,
    start_response: Callable,
    *,
    tracer: Any = None,
    service: Optional[str] = None,
    pin_from: object = None,
) -> Iterable[bytes]:
    """Call the WSGI ``app`` for one request, traced (see the module docstring)."""
    previous = ACTIVE_SPAN.get()
    span = start_server_request(integration, environ, _read_environ, tracer=tracer,
                                service=service, pin_from=pin_from)
    if span is None:
        return app(environ, start_response)

    def traced_start_response(status: str, headers: list, *exc_info: Any) -> Any:
        try:
            set_status(span, status)
        except Exception as error:
            integration.probe_failed(error)
        if exc_info:
            return start_response(status, headers, *exc_info)
        return start_response(status, headers)  # a plain call: no argument tuple to build

    try:
        body = app(environ, traced_start_response)
    except BaseException as exc:
        finish_request(span, integration, exc)
        raise
    # Until the server reads the body, the request is not this context's business: a body
    # that is never read nor closed must not become the parent of the next request.
    if ACTIVE_SPAN.get() is span:
        ACTIVE_SPAN.set(previous)
    file_wrapper = environ.get("wsgi.file_wrapper")
    if (isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
            and _end_span_on_close(body, span, integration)):
        return body
    return TracedBody(body, span, integration)


def _end_span_on_close(body: Any, span: Span, integration: Integration) -> bool:
    """Make the server's ``close()`` of the file wrapper ``body`` end ``span``; False if it
    cannot (no instance ``__dict__``, a read-only ``close``...).

    The server must get the file wrapper itself: it checks ``isinstance(body,
    environ["wsgi.file_wrapper"])`` to send the file with ``sendfile()``, which wrapping the body
    in :class:`TracedBody` would defeat. So ``close`` is hooked on that very instance, and put
    back as it was when called. A server that never calls ``close()`` leaves the span open: it
    goes with the wrapper, or, if the request has child spans, with its trace when the tracer's
    bounded registry of open traces evicts it.
    """
    try:
        attrs = vars(body)
        had_close = "close" in attrs
        original = getattr(body, "close", None)

        def restore() -> None:
            if had_close:
                attrs["close"] = original
            else:
                attrs.pop("close", None)

        def close() -> None:
            restore()  # also breaks the cycle wrapper -> hook -> bound close -> wrapper
            _close_in_span(original, span, integration)

        body.close = close
        if attrs.get("close") is close and body.close is close:
            return True
        restore()  # a descriptor or __setattr__ kept the hook from being what servers call
    except Exception:
        pass  # the object refuses the hook: TracedBody is the (slower) fallback
    return False


def _close_in_span(close: Optional[Callable[[], Any]], span: Span,
                   integration: Integration) -> None:
    """Call the body's ``close`` (if any) with ``span`` active, then end ``span``."""
    token = ACTIVE_SPAN.set(span)
    try:
        if close is not None:
            close()
    except BaseException as exc:
        finish_request(span, integration, exc)
        raise
    finally:
        ACTIVE_SPAN.reset(token)
    if not span.finished:  # usually it is: the server read the whole body (a call less)
        finish_request(span, integration)


class TracedBody:
    """The response iterable, with the request span active while it produces the body.

    The span ends when the server closes the body (PEP 3333), or earlier, when the body is
    exhausted, or when a half-read body is dropped: test clients read bodies without always
    closing them, or do not read them at all. An exception raised while the body is produced is
    recorded on the span and re-raised.
    """

    def __init__(self, body: Iterable[bytes], span: Span, integration: Integration) -> None:
        self._body = body
        self._span = span
        self._integration = integration

    def __iter__(self) -> Iterator[bytes]:
        span = self._span
        chunks = iter(self._body)
        while True:
            token = ACTIVE_SPAN.set(span)
            # The span is made inactive before it ends: ending the active span would make the
            # tracer write the contextvar once more (~1.2k instructions a request, callgrind).
            try:
                chunk = next(chunks)
            except StopIteration:
                ACTIVE_SPAN.reset(token)
                finish_request(span, self._integration)
                return
            except BaseException as exc:
                ACTIVE_SPAN.reset(token)
                finish_request(span, self._integration, exc)
                raise
            ACTIVE_SPAN.reset(token)
            try:
                yield chunk
            except GeneratorExit:
                # The body was dropped half read and never closed (a test client's response
                # whose data nobody read): the request ends here rather than never.
                finish_request(span, self._integration)
                raise

    def close(self) -> None:
        _close_in_span(getattr(self._body, "close", None), self._span, self._integration)


class WSGITraceMiddleware:
    """A WSGI middleware tracing every request to ``app`` with ``integration``'s conventions.

    Explicit setup (the seed's middlewares): it traces whether or not the integration is
    enabled, with the given ``tracer`` (default: the global one) and ``service``.
    """

    def __init__(self, app: WSGIApp, integration: Integration, tracer: Any = None,
                 service: Optional[str] = None) -> None:
        self.app = app
        self._integration = integration
        self._tracer = tracer
        self._service = service

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return trace_wsgi_call(self._integration, self.app, environ, start_response,
                               tracer=self._tracer, service=self._service)


# -- probes ------------------------------------------------------------------------------------


def _around_wsgi_app(integration: Integration, wrapped: Callable, instance: Any, args: tuple,
                     kwargs: dict) -> Any:
    if len(args) != 2 or kwargs:  # not the WSGI calling convention: leave it alone
        return wrapped(*args, **kwargs)
    environ, start_response = args
    return trace_wsgi_call(integration, wrapped, environ, start_response, pin_from=instance)


class WSGIAppProbe(AroundProbe):
    """Trace the WSGI entry point ``path``: a ``"Class.method"`` taking
    ``(environ, start_response)``."""

    def __init__(self, module: str, path: str) -> None:
        super().__init__(module, path, _around_wsgi_app)
