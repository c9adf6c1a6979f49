"""urllib3: a ``urllib3.request`` client span per ``HTTPConnectionPool.urlopen``.

Same span and propagation as ``hooks/requests.py`` (service ``urllib3``). The call's headers
are copied before the trace headers are added, because urllib3 otherwise sends the pool's own
shared header dict, and the caller's dict is not ours to change; code rewriting cannot replace
an argument, so this probe is a ``wrapt`` wrapper (:class:`~ddagent.hooks.wrappers.AroundProbe`).
A call made inside another HTTP client span (requests, or urllib3's own retries and redirects)
adds no span, and nothing is traced while ddagent's writer sends.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ddagent.hooks.http import client_span, may_trace_client_call, record_status
from ddagent.hooks.registry import Integration
from ddagent.hooks.wrappers import AroundProbe, call_probed


def _traced_urlopen(integration: Integration, wrapped: Callable, pool: Any, args: tuple,
                    kwargs: dict) -> Any:
    if not may_trace_client_call():
        return wrapped(*args, **kwargs)
    try:
        bound = inspect.signature(wrapped).bind(*args, **kwargs)
    except TypeError:  # let urllib3 report the bad call itself
        return wrapped(*args, **kwargs)
    method, url = str(bound.arguments["method"]).upper(), str(bound.arguments["url"])
    if "://" not in url:
        url = f"{pool.scheme}://{pool.host}:{pool.port}{url}"
    given = bound.arguments.get("headers")
    headers = dict(pool.headers if given is None else given)
    bound.arguments["headers"] = headers

    def on_call(integration: Integration) -> Any:
        return client_span(integration, pool, "urllib3.request", method, url, headers)

    return call_probed(integration, on_call, (), lambda: wrapped(*bound.args, **bound.kwargs),
                       _record_response)


def _record_response(span: Any, response: Any) -> None:
    record_status(span, getattr(response, "status", None))


integration = Integration(
    "urllib3",
    service="urllib3",
    probes=[AroundProbe("urllib3.connectionpool", "HTTPConnectionPool.urlopen", _traced_urlopen)],
)
