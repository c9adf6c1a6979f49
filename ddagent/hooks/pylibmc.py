"""pylibmc: ``memcached.cmd`` spans for the memcached commands of ``pylibmc.Client``.

``pylibmc.Client`` is a Python subclass of the C type ``_pylibmc.client``, which implements the
commands; C methods have no code to rewrite and C types cannot be changed. So each traced
command is given its own attribute on the Python ``Client`` class: a ``wrapt`` wrapper around
the inherited C method. Disabling deletes those attributes again, so the class is exactly as
pylibmc made it, and a disabled integration (or tracer) never touches a call. A bound method
taken before ddagent started (``get = client.get``) keeps the untraced C method.

Span: name ``memcached.cmd``, service ``memcached``, type ``cache``, resource = the method name
(``get``, ``set_multi``); tag ``memcached.query`` = ``"<method> <key>"`` for single-key
commands; metric ``db.row_count`` = the hits of ``get``, ``gets`` and ``get_multi``. With one
server the spans carry ``out.host``, ``server.address`` and ``network.destination.port``; with
several, libmemcached picks the server per key in C, so no peer is recorded rather than a
guessed one.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import partial
from types import ModuleType
from typing import Any, Callable

import wrapt

from ddagent.hooks._common import text as _text
from ddagent.hooks.registry import Integration, OnCall, OnReturn, Undo
from ddagent.hooks.wrappers import call_probed

SINGLE_KEY_COMMANDS = ("get", "gets", "set", "add", "replace", "append", "prepend", "cas",
                       "delete", "incr", "decr", "touch")
MULTI_KEY_COMMANDS = ("get_multi", "set_multi", "add_multi", "delete_multi", "incr_multi")
QUERY_MAX_LENGTH = 1000
# True while a traced command runs in this context: commands it calls itself are not traced.
_IN_COMMAND: ContextVar[bool] = ContextVar("ddagent_pylibmc_in_command", default=False)


class ClientMethodsProbe:
    """Trace the C methods ``commands`` that ``pylibmc.client.Client`` inherits.

    ``on_call(integration, client, command, args, kwargs)`` returns a span or None;
    ``on_return(span, result, client, command, args, kwargs)`` tags the result.
    """

    module = "pylibmc.client"

    def __init__(self, commands: tuple[str, ...], *, on_call: OnCall,
                 on_return: OnReturn | None = None) -> None:
        self.commands = commands
        self.on_call = on_call
        self.on_return = on_return

    def __repr__(self) -> str:
        return f"<ClientMethodsProbe pylibmc.client.Client {', '.join(self.commands)}>"

    def install(self, module: ModuleType, integration: Integration) -> Undo | None:
        client_class = module.Client
        installed = {command: self._wrapper(integration, client_class, command)
                     for command in self.commands if command not in vars(client_class)}
        for command, wrapper in installed.items():
            setattr(client_class, command, wrapper)

        def undo() -> None:
            for command, wrapper in installed.items():
                if vars(client_class).get(command) is wrapper:  # not replaced by someone else
                    delattr(client_class, command)

        return undo

    def _wrapper(self, integration: Integration, client_class: type, command: str) -> Any:
        on_call, on_return = self.on_call, self.on_return

        def traced(wrapped: Callable, client: Any, args: tuple, kwargs: dict) -> Any:
            if _IN_COMMAND.get():  # delete_multi calls delete per key: one span, the user's
                return wrapped(*args, **kwargs)
            outermost = _IN_COMMAND.set(True)
            try:
                return call_probed(integration, on_call, (client, command, args, kwargs),
                                   lambda: wrapped(*args, **kwargs), on_return)
            finally:
                _IN_COMMAND.reset(outermost)

        return wrapt.FunctionWrapper(getattr(client_class, command), traced)


def _command_span(integration: Integration, client: Any, command: str, args: tuple,
                  kwargs: dict, *, single_key: bool) -> Any:
    host, port = _peer(client)
    tags = {"db.system": "memcached", "out.host": host, "server.address": host}
    if single_key:
        key = args[0] if args else kwargs.get("key")
        tags["memcached.query"] = f"{command} {_text(key)}"[:QUERY_MAX_LENGTH]
    return integration.start_span(client, "memcached.cmd", resource=command, span_type="cache",
                                  tags=tags, metrics={"network.destination.port": port})


def _record_hits(span: Any, result: Any, client: Any, command: str, args: tuple,
                 kwargs: dict) -> None:
    if command == "get":
        default = args[1] if len(args) > 1 else kwargs.get("default")
        span.set_metric("db.row_count", 0 if result is default else 1)
    elif command == "gets":
        span.set_metric("db.row_count", 0 if result[0] is None else 1)  # (value, cas id)
    elif command == "get_multi":
        span.set_metric("db.row_count", len(result))


def _peer(client: Any) -> tuple[str | None, int | None]:
    """(host, port) of a one-server client; (None, None) with several servers."""
    addresses = getattr(client, "addresses", ())
    if len(addresses) != 1:
        return None, None
    from pylibmc.client import translate_server_spec

    _kind, host, port, _weight = translate_server_spec(addresses[0])
    return host, port or None  # a unix socket has no port


integration = Integration(
    "pylibmc",
    service="memcached",
    probes=[
        ClientMethodsProbe(SINGLE_KEY_COMMANDS, on_call=partial(_command_span, single_key=True),
                           on_return=_record_hits),
        ClientMethodsProbe(MULTI_KEY_COMMANDS, on_call=partial(_command_span, single_key=False),
                           on_return=_record_hits),
    ],
)
