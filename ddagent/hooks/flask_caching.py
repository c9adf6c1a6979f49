"""Flask-Caching and Flask-Cache 0.13.1: ``flask_cache.cmd`` spans for the ``Cache`` operations.

Both libraries' ``Cache`` class proxies each operation (``get``, ``set_many``, ...) to the
configured backend in a plain Python method; those methods are probed by rewriting their code.
The backend's own work shows as child spans when its client is traced (``redis.command``,
``memcached.cmd``). Flask-Caching's ``@cached`` and ``@memoize`` read through ``Cache.get`` too.

Span: name ``flask_cache.cmd``, service ``flask-cache``, type ``cache``, no ``span.kind`` and no
``db.system``. Resource = the operation, followed by the backend's key prefix when it has one
(``get myapp_``): the seed meant to add it but looked it up on the wrong object, so ddtrace's
resource is the bare operation. Tags: ``flask_cache.backend`` (the configured ``CACHE_TYPE``),
``flask_cache.key`` (the key as the application passed it, or the list of keys), and for Redis
and one-server memcached backends ``out.host``, ``server.address`` with the metrics
``network.destination.port`` and ``out.redis_db``; ``db.row_count`` counts the hits of ``get``
and ``get_many``.

:func:`get_traced_cache` is the seed's explicit API: it returns a ``Cache`` subclass whose
instances report with the given tracer, service and tags (it switches this integration on).
"""

from __future__ import annotations

import importlib
from typing import Any

from ddagent.hooks.registry import FunctionProbe, Integration, enable
from ddagent.pin import Pin

DEFAULT_SERVICE = "flask-cache"
SINGLE_KEY_OPERATIONS = ("get", "set", "add", "delete")
MULTI_KEY_OPERATIONS = ("get_many", "set_many", "delete_many")
# Flask-Caching added these; Flask-Cache 0.13.1 has only the seed's operations and clear.
NEWER_SINGLE_KEY_OPERATIONS = ("has",)
NEWER_MULTI_KEY_OPERATIONS = ("get_dict", "unlink")
KEY_MAX_LENGTH = 1000


def _span(integration: Integration, cache: Any, operation: str, keys: Any) -> Any:
    backend = _backend(cache)
    prefix = getattr(backend, "key_prefix", None)
    host, port, redis_db = _peer(cache, backend)
    backend_name = _setting(cache, "CACHE_TYPE") or (backend and type(backend).__name__)
    return integration.start_span(
        cache, "flask_cache.cmd", span_type="cache",
        resource=f"{operation} {prefix}" if isinstance(prefix, str) and prefix else operation,
        tags={"flask_cache.backend": None if backend_name is None else str(backend_name),
              "flask_cache.key": None if keys is None else str(keys)[:KEY_MAX_LENGTH],
              "out.host": host, "server.address": host},
        metrics={"network.destination.port": port, "out.redis_db": redis_db},
    )


def _backend(cache: Any) -> Any:
    """The backend object of ``cache`` for the current app, or None when there is none."""
    try:
        return cache.cache
    except Exception:  # no app context or not initialised: the operation itself will say so
        return None


def _setting(cache: Any, name: str) -> Any:
    """A CACHE_* setting: the Cache's own config, else the app's."""
    value = (getattr(cache, "config", None) or {}).get(name)
    if value is None:
        app = getattr(cache, "app", None) or _current_app()
        value = getattr(app, "config", {}).get(name)
    return value


def _current_app() -> Any:
    from flask import current_app, has_app_context

    return current_app._get_current_object() if has_app_context() else None


def _peer(cache: Any, backend: Any) -> tuple[str | None, int | None, int | None]:
    """(host, port, redis db) of a Redis backend, or of a memcached backend with one server."""
    # cachelib's Redis backend (Flask-Caching) keeps _write_client; Werkzeug's keeps _client.
    client = getattr(backend, "_write_client", None) or getattr(backend, "_client", None)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        kwargs = pool.connection_kwargs
        return kwargs.get("host") or kwargs.get("path"), kwargs.get("port"), kwargs.get("db") or 0
    # Memcached clients (pylibmc pools, python-memcached, ...) differ; the setting does not.
    servers = _setting(cache, "CACHE_MEMCACHED_SERVERS") if client is not None else None
    if not isinstance(servers, (list, tuple)) or len(servers) != 1:
        return None, None, None
    host, _, port = str(servers[0]).rpartition(":")
    return (host, int(port), None) if host and port.isdigit() else (str(servers[0]), None, None)


# How the result of a read counts its hits (db.row_count).
HITS = {
    "get": lambda result: 0 if result is None else 1,
    "get_many": lambda values: sum(value is not None for value in values),
}


def _hit_recorder(operation: str) -> Any:
    count = HITS.get(operation)
    if count is None:
        return None

    def record_hits(span: Any, result: Any, *_params: Any) -> None:
        span.set_metric("db.row_count", count(result))

    return record_hits


def _single_key_probe(module: str, operation: str) -> FunctionProbe:
    def on_call(integration: Integration, cache: Any, args: tuple, kwargs: dict) -> Any:
        return _span(integration, cache, operation, args[0] if args else kwargs.get("key"))

    return FunctionProbe(module, f"Cache.{operation}", on_call=on_call,
                         on_return=_hit_recorder(operation))


def _multi_key_probe(module: str, operation: str) -> FunctionProbe:
    def on_call(integration: Integration, cache: Any, args: tuple, kwargs: dict) -> Any:
        if operation == "set_many":  # set_many(mapping): its keys
            keys = list(args[0] if args else kwargs.get("mapping") or ())
        else:
            keys = list(args)
        return _span(integration, cache, operation, keys)

    return FunctionProbe(module, f"Cache.{operation}", on_call=on_call,
                         on_return=_hit_recorder(operation))


def _clear_probe(module: str) -> FunctionProbe:
    def on_call(integration: Integration, cache: Any) -> Any:
        return _span(integration, cache, "clear", None)

    return FunctionProbe(module, "Cache.clear", on_call=on_call)


def _probes(module: str, single_key: tuple[str, ...], multi_key: tuple[str, ...]) -> list:
    return [*(_single_key_probe(module, op) for op in single_key),
            *(_multi_key_probe(module, op) for op in multi_key),
            _clear_probe(module)]


integration = Integration(
    "flask_cache",
    service=DEFAULT_SERVICE,
    span_kind="",
    probes=[
        *_probes("flask_caching", SINGLE_KEY_OPERATIONS + NEWER_SINGLE_KEY_OPERATIONS,
                 MULTI_KEY_OPERATIONS + NEWER_MULTI_KEY_OPERATIONS),
        *_probes("flask_cache", SINGLE_KEY_OPERATIONS, MULTI_KEY_OPERATIONS),
    ],
)


def get_traced_cache(ddtracer: Any, service: str = DEFAULT_SERVICE,
                     meta: dict[str, Any] | None = None) -> type:
    """The seed's API: a ``Cache`` subclass traced with ``ddtracer``, ``service`` and ``meta``.

    Uses Flask-Caching's ``Cache``, else Flask-Cache's. Switches the ``flask_cache`` integration
    on (every ``Cache`` is then traced; instances of the returned class carry these settings).
    """
    try:
        cache_class = importlib.import_module("flask_caching").Cache
    except ImportError:
        cache_class = importlib.import_module("flask_cache").Cache
    enable(integration.name)
    traced = type("TracedCache", (cache_class,), {"__module__": __name__})
    Pin(service=service, tags=dict(meta) if meta else None, tracer=ddtracer).onto(traced)
    return traced
