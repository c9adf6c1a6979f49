"""Django: the request, its middleware, view, templates, database queries and cache calls.

Everything is probed inside Django itself, so nothing has to be added to ``INSTALLED_APPS`` or
``MIDDLEWARE``:

- ``BaseHandler.get_response`` (WSGI and Django's test client) and ``get_response_async``
  (ASGI and ``AsyncClient``) → the request root ``django.request`` (type ``web``), resource
  ``GET <route>`` (the URL pattern, e.g. ``GET users/<int:pk>/``), else ``GET <module.view>``,
  else ``GET 404``. Under a WSGI server the root comes from the shared WSGI layer
  (``hooks/wsgi.py``, ``WSGIHandler.__call__``), under an ASGI server from the ASGI layer
  (``hooks/asgi.py``, ``ASGIHandler.__call__``; the span is kept in ``request.scope``), and
  these probes only name it.
- ``convert_exception_to_response``, as ``load_middleware`` calls it for every middleware →
  a ``django.middleware`` span around each middleware (resource ``<module.Class>.__call__``,
  or the function's path for a function-style middleware). Its ``process_view``/
  ``process_exception`` hooks run inside the view span, untraced alone. Under ASGI (and
  ``AsyncClient``) a middleware that Django runs as a coroutine gets its span around the
  awaited call; its traced handler is marked as a coroutine function
  (``asgiref.sync.markcoroutinefunction``), so Django builds the same chain as without
  ddagent. A sync one in that chain runs in ``sync_to_async``'s thread, in a copy of the
  request's context, so its span nests the same way.
- ``BaseHandler._get_response`` and ``_get_response_async`` → ``django.view`` (resource: the
  view's dotted path); it covers URL resolution, the view middleware hooks and the view. A 404
  or 403 raised there is not an error; any other exception is, and Django's 500 page puts it
  on the request span too.
- ``Template.render`` → ``django.template.render`` (type ``template``).
- ``CursorWrapper._execute``/``_executemany`` → ``<vendor>.query`` (``sqlite.query``,
  ``postgres.query``…; service ``<alias>db``), unless the driver's own integration (sqlite3,
  psycopg) already traces that cursor: then its span just gets ``django.db.vendor`` and
  ``django.db.alias``, so a query is never traced twice.
- the cache backends' get/set/add/delete/incr/decr/get_many/set_many/delete_many →
  ``django.cache`` (type ``cache``, resource ``<backend module>.<op>``).

User tags (``django.user.is_authenticated``, ``usr.id``…) are set when ``django.contrib.auth``
has already loaded ``request.user`` for the request; the tracer never forces that lookup (it can
query the database). ``DD_DJANGO_INCLUDE_USER_NAME=false`` leaves out the user name.

The seed's setup still works: ``'ddagent.hooks.django'`` in ``INSTALLED_APPS`` (an app with no
models) plus :class:`TraceMiddleware` in ``MIDDLEWARE``, configured by the ``DATADOG_TRACE``
settings dict. The middleware applies those settings and turns this integration on; it never
opens a span itself, so the request is traced once whether or not ddagent also auto-instruments.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

from ddagent.config import env_bool
from ddagent.context import ACTIVE_SPAN
from ddagent.hooks import asgi, dbapi, http, wsgi
from ddagent.hooks.registry import FunctionProbe, Integration
from ddagent.hooks.wrappers import AroundProbe, WrapperProbe, call_probed, call_probed_async
from ddagent.pin import Pin

# Read once, when Django is imported (a per-request read would warn per request on garbage).
INCLUDE_USER_NAME = env_bool("DD_DJANGO_INCLUDE_USER_NAME") is not False

log = logging.getLogger(__name__)

CACHE_OPERATIONS = ("get", "set", "add", "delete", "incr", "decr",
                    "get_many", "set_many", "delete_many")
CACHE_BACKENDS = {
    "django.core.cache.backends.base": "BaseCache",
    "django.core.cache.backends.locmem": "LocMemCache",
    "django.core.cache.backends.db": "DatabaseCache",
    "django.core.cache.backends.filebased": "FileBasedCache",
    "django.core.cache.backends.memcached": "BaseMemcachedCache",
    "django.core.cache.backends.redis": "RedisCache",
    "django.core.cache.backends.dummy": "DummyCache",
}
# Django's DATABASES vendor → the span name's prefix and db.system, as Datadog names them.
VENDOR_SPAN_PREFIX = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql",
                      "oracle": "oracle"}
VENDOR_DB_SYSTEM = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql",
                    "oracle": "oracle"}

# The DATADOG_TRACE setting AUTO_INSTRUMENT=False keeps only the request-level spans.
_settings = {"sub_spans": True}


def _qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function; of its class for any other object."""
    target = obj if isinstance(obj, type) or hasattr(obj, "__code__") else type(obj)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", "?")
    return f"{getattr(target, '__module__', None) or '?'}.{name}"


# -- the request -------------------------------------------------------------------------------

def _around_get_response(integration: Integration, wrapped: Callable, handler: Any,
                         args: tuple, kwargs: dict) -> Any:
    """Name the request's span after Django's answer; start and end it when no WSGI layer did.

    Under a WSGI server the shared layer already traces the request (``WSGIHandler.__call__``);
    Django's test client and other direct callers of ``get_response`` get their root here. A
    WSGIRequest's ``META`` is the WSGI environ, so both find the span at the same key.
    """
    request = args[0] if args else kwargs.get("request")
    if not isinstance(getattr(request, "META", None), dict):
        return wrapped(*args, **kwargs)
    own = _start_own_request(integration, request, handler)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        if own is not None:
            http.finish_request(own, integration, exc)
        raise
    _end_own_request(integration, request, response, own)
    return response


def _around_get_response_async(integration: Integration, wrapped: Callable, handler: Any,
                               args: tuple, kwargs: dict) -> Any:
    """``get_response_async``: :func:`_around_get_response` for ASGI requests.

    Under an ASGI server the request span comes from ``ASGIHandler.__call__`` (``hooks/asgi.py``)
    and is found in ``request.scope``; ``AsyncClient`` calls this method directly and gets its
    root here."""
    request = args[0] if args else kwargs.get("request")
    if not isinstance(getattr(request, "META", None), dict):
        return wrapped(*args, **kwargs)
    return _get_response_async(integration, wrapped(*args, **kwargs), request, handler)


async def _get_response_async(integration: Integration, call: Any, request: Any,
                              handler: Any) -> Any:
    own = _start_own_request(integration, request, handler)
    try:
        response = await call
    except BaseException as exc:
        if own is not None:
            http.finish_request(own, integration, exc)
        raise
    _end_own_request(integration, request, response, own)
    return response


def _carrier(request: Any) -> dict:
    """Where the request's span is kept: the ASGI scope of an ASGIRequest, else ``META`` (the
    WSGI environ)."""
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else request.META


def _span_of(request: Any) -> Any:
    return http.request_span(_carrier(request))


def _start_own_request(integration: Integration, request: Any, handler: Any) -> Any:
    carrier = _carrier(request)
    start = wsgi.start_request if carrier is request.META else asgi.start_request
    return start(integration, carrier, pin_from=handler)


def _end_own_request(integration: Integration, request: Any, response: Any, own: Any) -> None:
    try:
        _tag_response(_span_of(request), request, response)
        if own is not None:
            status = getattr(response, "status_code", None)
            if getattr(response, "streaming", False):
                # Ends when the caller closes the response (the test client does, after the
                # last chunk), so the streamed body is inside the request span.
                response._resource_closers.append(
                    lambda: http.finish_request(own, integration, status=status))
            else:
                http.finish_request(own, integration, status=status)
    except Exception as error:
        integration.probe_failed(error)


def _around_resolve_request(integration: Integration, wrapped: Callable, handler: Any,
                            args: tuple, kwargs: dict) -> Any:
    match = wrapped(*args, **kwargs)
    try:
        request = args[0] if args else kwargs.get("request")
        span = _span_of(request)
        view = match._func_path
        if span is not None:
            span.set_tag("django.view", view)
            if match.route:
                http.set_route(span, match.route)
            else:
                span.resource = f"{request.method} {view}"
        active = ACTIVE_SPAN.get()
        if active is not None and active.name == "django.view" and not active.finished:
            active.resource = view
    except Exception as error:
        integration.probe_failed(error)
    return match


def _tag_response(span: Any, request: Any, response: Any) -> None:
    if span is None:
        return
    span.set_tag("django.request.class", _qualified_name(type(request)))
    span.set_tag("django.response.class", _qualified_name(type(response)))
    _tag_user(span, request)


def _tag_user(span: Any, request: Any) -> None:
    user = request.__dict__.get("user")  # set by AuthenticationMiddleware, lazily
    if user is None:
        return
    functional = sys.modules.get("django.utils.functional")
    if functional is not None and getattr(user, "_wrapped", None) is functional.empty:
        return  # not looked up by the application: do not query the session store for it
    authenticated = bool(getattr(user, "is_authenticated", False))
    span.set_tag("django.user.is_authenticated", str(authenticated))
    if not authenticated:
        return
    user_id = getattr(user, "pk", None)
    if user_id is not None:
        span.set_tag("django.user.id", str(user_id))
        span.set_tag("usr.id", str(user_id))
    if INCLUDE_USER_NAME:
        get_username = getattr(user, "get_username", None)
        if get_username is not None:
            span.set_tag("django.user.name", get_username())


def _record_uncaught_exception(integration: Integration, request: Any, resolver: Any,
                               exc_info: Any) -> None:
    """Django turned an exception into a 500 page: put the exception on the request span."""
    span = _span_of(request) if isinstance(getattr(request, "META", None), dict) else None
    if span is not None and exc_info and exc_info[0] is not None:
        span.set_exc_info(*exc_info)
    return None


# -- middleware --------------------------------------------------------------------------------

def _trace_middleware(integration: Integration, handler: Callable, args: tuple,
                      kwargs: dict) -> Callable:
    """``convert_exception_to_response(mw)``'s result, wrapped in a ``django.middleware`` span."""
    inner = args[0] if args else kwargs.get("get_response")
    if _is_handler_method(inner):
        return handler  # the view layer has its own span
    resource = _qualified_name(inner) + ("" if _is_function(inner) else ".__call__")
    traced = _TracedAsyncMiddleware if _is_coroutine_function(handler) else _TracedMiddleware
    return traced(handler, integration, resource)


def _is_handler_method(obj: Any) -> bool:
    owner = getattr(obj, "__self__", None)
    base = sys.modules.get("django.core.handlers.base")
    return base is not None and isinstance(owner, base.BaseHandler)


def _is_function(obj: Any) -> bool:
    return hasattr(obj, "__code__")


def _is_coroutine_function(obj: Any) -> bool:
    from asgiref.sync import iscoroutinefunction

    return iscoroutinefunction(obj)


class _TracedMiddleware:
    """A middleware's exception-converting handler, called inside a ``django.middleware`` span.

    A plain callable, not a proxy: Django only calls it (and reads ``__name__`` for debug
    logging, which ``functools.wraps`` copied onto the handler and is copied here too).
    """

    def __init__(self, handler: Callable, integration: Integration, resource: str) -> None:
        self.__wrapped__ = handler
        self._integration = integration
        self._resource = resource
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(handler, attr):
                setattr(self, attr, getattr(handler, attr))

    def __call__(self, request: Any) -> Any:
        return call_probed(self._integration, _middleware_span, (self, request),
                           lambda: self.__wrapped__(request))


class _TracedAsyncMiddleware(_TracedMiddleware):
    """The same for a coroutine handler (an async middleware under ASGI or ``AsyncClient``):
    the span lasts until the awaited call is done.

    Marked as a coroutine function, as Django marks its async middleware instances: Django,
    ``asgiref`` and ``sync_and_async_middleware`` factories test that on the handler they are
    given to choose between awaiting it and adapting it with ``async_to_sync``.
    """

    def __init__(self, handler: Callable, integration: Integration, resource: str) -> None:
        from asgiref.sync import markcoroutinefunction

        super().__init__(handler, integration, resource)
        markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        return call_probed_async(self._integration, _middleware_span, (self, request),
                                 lambda: self.__wrapped__(request))


def _middleware_span(integration: Integration, traced: _TracedMiddleware, request: Any) -> Any:
    if not _settings["sub_spans"]:
        return None
    return integration.start_child_span("django.middleware", resource=traced._resource)


# -- the view, templates ------------------------------------------------------------------------

def _around_view(integration: Integration, wrapped: Callable, handler: Any, args: tuple,
                 kwargs: dict) -> Any:
    """``_get_response`` inside a ``django.view`` span, named once the URL resolves.

    Not-found and permission-denied exceptions become 4xx responses: they are not errors.
    """
    span = _start_view_span(integration)
    if span is None:
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        _record_view_error(span, exc)
        raise
    finally:
        span.finish()


def _around_view_async(integration: Integration, wrapped: Callable, handler: Any, args: tuple,
                       kwargs: dict) -> Any:
    """``_get_response_async`` inside a ``django.view`` span (see :func:`_around_view`).

    A sync view runs in ``sync_to_async``'s thread, in a copy of this context: the view span is
    active there, so its database, template and cache spans are its children."""
    return _view_async(integration, wrapped(*args, **kwargs))


async def _view_async(integration: Integration, call: Any) -> Any:
    span = _start_view_span(integration)
    if span is None:
        return await call
    try:
        return await call
    except BaseException as exc:
        _record_view_error(span, exc)
        raise
    finally:
        span.finish()


def _start_view_span(integration: Integration) -> Any:
    if not _settings["sub_spans"]:
        return None
    try:
        return integration.start_child_span("django.view", resource="django.view")
    except Exception as error:
        integration.probe_failed(error)
        return None


def _record_view_error(span: Any, exc: BaseException) -> None:
    if not _is_client_error(exc):
        span.set_exc_info(type(exc), exc, exc.__traceback__)


def _is_client_error(exc: BaseException) -> bool:
    django_http = sys.modules.get("django.http")
    exceptions = sys.modules.get("django.core.exceptions")
    return ((django_http is not None and isinstance(exc, django_http.Http404))
            or (exceptions is not None and isinstance(exc, exceptions.PermissionDenied)))


def _template_span(integration: Integration, template: Any, context: Any) -> Any:
    if not _settings["sub_spans"]:
        return None
    name = getattr(template, "name", None)
    engine = getattr(template, "engine", None)
    span = integration.start_child_span("django.template.render", span_type="template",
                                 resource=name or f"{_qualified_name(type(template))}.render")
    if span is not None:
        if name:
            span.set_tag("django.template.name", name)
        if engine is not None:
            span.set_tag("django.template.engine.class", _qualified_name(type(engine)))
    return span


# -- cache ---------------------------------------------------------------------------------------

def _cache_probe(module: str, klass: str, operation: str) -> FunctionProbe:
    def start(integration: Integration, cache: Any, *params: Any) -> Any:
        if not _settings["sub_spans"]:
            return None
        resource = f"{type(cache).__module__}.{operation}".lower()
        prefix = getattr(cache, "key_prefix", "")
        if prefix:
            resource = f"{resource} {prefix}"
        return integration.start_span(
            cache, "django.cache", resource=resource, span_type="cache",
            tags={"span.kind": "client", "django.cache.backend": _qualified_name(type(cache)),
                  "django.cache.key": _cache_keys(params[0]) if params else None},
        )

    def count_hits(span: Any, result: Any, cache: Any, *params: Any) -> None:
        if operation == "get":
            default = params[1] if len(params) > 1 else None
            span.set_metric("db.row_count", 0 if result is default else 1)
        elif operation == "get_many" and isinstance(result, dict):
            span.set_metric("db.row_count", len(result))

    return FunctionProbe(module, f"{klass}.{operation}", on_call=start, on_return=count_hits)


def _cache_keys(keys: Any) -> str:
    if isinstance(keys, (str, bytes)):
        return keys.decode("utf-8", "replace") if isinstance(keys, bytes) else keys
    if isinstance(keys, dict):
        keys = list(keys)
    try:
        return " ".join(str(k) for k in keys)
    except TypeError:
        return str(keys)


# -- database --------------------------------------------------------------------------------

def _query_span(integration: Integration, wrapper: Any, sql: Any, params: Any,
                extra: tuple) -> Any:
    if not _settings["sub_spans"]:
        return None
    connection = wrapper.db
    vendor = getattr(connection, "vendor", "") or "db"
    alias = getattr(connection, "alias", "default")
    django_tags = {"django.db.vendor": vendor, "django.db.alias": alias}
    # A cursor the driver's integration traces: its spans get Django's tags, no second span.
    if dbapi.tag_connection(wrapper.cursor, django_tags):
        return None
    settings = getattr(connection, "settings_dict", None) or {}
    host = settings.get("HOST") or None
    port = settings.get("PORT")
    span = integration.start_span(
        wrapper, f"{VENDOR_SPAN_PREFIX.get(vendor, vendor)}.query", span_type="sql",
        service=_database_service(alias),
        tags={**django_tags, "span.kind": "client",
              "db.system": VENDOR_DB_SYSTEM.get(vendor, vendor),
              "out.host": host, "server.address": host,
              "db.name": None if vendor == "sqlite" else settings.get("NAME") or None,
              "db.user": settings.get("USER") or None},
        metrics={"network.destination.port": int(port) if str(port or "").isdigit() else None},
    )
    if span is not None:
        span.resource = dbapi.query_resource(dbapi.query_text(sql, wrapper.cursor), span)
    return span


def _database_service(alias: str) -> str:
    return (os.environ.get("DD_DJANGO_DATABASE_SERVICE_NAME")
            or os.environ.get("DD_DJANGO_DATABASE_SERVICE_NAME_PREFIX", "") + f"{alias}db")


def _record_row_count(span: Any, result: Any, wrapper: Any, *params: Any) -> None:
    dbapi.record_row_count(span, wrapper.cursor)


# -- the seed's settings-based setup -------------------------------------------------------------

class TraceMiddleware:
    """The seed's middleware: applies ``settings.DATADOG_TRACE`` and turns the integration on.

    Keys: ``TRACER`` (a tracer, or its dotted import path), ``DEFAULT_SERVICE``, ``ENABLED``,
    ``AUTO_INSTRUMENT`` (False: only the request span, no middleware, view, template,
    database or cache spans), ``AGENT_HOSTNAME``, ``AGENT_PORT``. It traces nothing itself: the
    probes do, so a request is traced once whether or not ddagent instruments Django anyway.
    As the first entry of ``MIDDLEWARE`` it is built last, so the middleware spans start with
    the next handler Django builds; run the application under ``python -m ddagent`` to have
    them from the first request.
    """

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        try:
            _apply_settings()
        except Exception:
            log.warning("ddagent: could not apply the DATADOG_TRACE settings", exc_info=True)

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)


def _apply_settings() -> None:
    from django.conf import settings
    from django.core.handlers.base import BaseHandler
    from django.utils.module_loading import import_string

    from ddagent import probes
    from ddagent.tracer import tracer as global_tracer

    options = dict(getattr(settings, "DATADOG_TRACE", None) or {})
    tracer = options.get("TRACER") or global_tracer
    if isinstance(tracer, str):
        tracer = import_string(tracer)
    if options.get("AGENT_HOSTNAME") or options.get("AGENT_PORT"):
        tracer.configure(hostname=options.get("AGENT_HOSTNAME"), port=options.get("AGENT_PORT"))
    if "ENABLED" in options:
        tracer.enabled = bool(options["ENABLED"])
    _settings["sub_spans"] = bool(options.get("AUTO_INSTRUMENT", True))
    Pin(service=options.get("DEFAULT_SERVICE"), tracer=tracer).onto(BaseHandler)
    probes.enable("django")


integration = Integration(
    "django",
    service="django",
    span_kind="",  # the request root is "server" (wsgi.py), DB and cache spans "client"
    probes=[
        wsgi.WSGIAppProbe("django.core.handlers.wsgi", "WSGIHandler.__call__"),
        asgi.ASGIAppProbe("django.core.handlers.asgi", "ASGIHandler.__call__"),
        AroundProbe("django.core.handlers.base", "BaseHandler.get_response",
                    _around_get_response),
        AroundProbe("django.core.handlers.base", "BaseHandler.get_response_async",
                    _around_get_response_async),
        AroundProbe("django.core.handlers.base", "BaseHandler.resolve_request",
                    _around_resolve_request),
        FunctionProbe("django.core.handlers.exception", "handle_uncaught_exception",
                      on_call=_record_uncaught_exception),
        WrapperProbe("django.core.handlers.base", "convert_exception_to_response",
                     on_result=_trace_middleware),
        AroundProbe("django.core.handlers.base", "BaseHandler._get_response", _around_view),
        AroundProbe("django.core.handlers.base", "BaseHandler._get_response_async",
                    _around_view_async),
        FunctionProbe("django.template.base", "Template.render", on_call=_template_span),
        FunctionProbe("django.db.backends.utils", "CursorWrapper._execute",
                      on_call=_query_span, on_return=_record_row_count),
        FunctionProbe("django.db.backends.utils", "CursorWrapper._executemany",
                      on_call=_query_span, on_return=_record_row_count),
        *(_cache_probe(module, klass, operation)
          for module, klass in CACHE_BACKENDS.items() for operation in CACHE_OPERATIONS),
    ],
)
