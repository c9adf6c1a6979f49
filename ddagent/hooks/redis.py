"""redis-py: ``redis.command`` spans for commands and pipelines (sync, asyncio, cluster).

Every command of a client goes through its ``execute_command``; a pipeline queues its commands
and sends them in ``execute`` (or at once, in ``immediate_execute_command``, while a ``WATCH``
is active, as in ``Redis.transaction``). Those Python methods are probed by rewriting their code,
so clients and bound methods created before ddagent started are traced too. The ``redis.asyncio``
methods are coroutines: their span covers the awaited call. A cluster client sends to the nodes'
connections directly, so a cluster command is one span, not one per node.

Span: name ``redis.command``, service ``redis``, type ``redis``; resource = the command name
(a pipeline: the names joined by newlines); tag ``redis.raw_command`` = the command with its
arguments (each cut to 100 characters, the whole to 1000); metrics ``redis.args_length`` or
``redis.pipeline_length``, and ``db.row_count`` for a ``GET`` (1 on a hit, 0 on a miss).
Clients with one connection pool also get ``out.host``, ``server.address``, ``out.redis_db``
and ``network.destination.port``; a cluster client picks its node per command, so its spans
carry no peer.
"""

from __future__ import annotations

from typing import Any

from ddagent.hooks._common import text as _text
from ddagent.hooks.registry import FunctionProbe, Integration, SpanTags

ARG_MAX_LENGTH = 100
COMMAND_MAX_LENGTH = 1000
TOO_LONG = "..."


def _command_span(integration: Integration, client: Any, args: tuple, options: dict) -> Any:
    parts = _texts(args)
    return integration.start_span(
        client, "redis.command", resource=parts[0] if parts else "", span_type="redis",
        tags={"redis.raw_command": _raw_command(parts)},
        metrics={"redis.args_length": float(len(args))}, preset=_peer(integration, client),
    )


def _record_hit(span: Any, result: Any, client: Any, args: tuple, options: dict) -> None:
    # The resource is the command's name as text (see _command_span).
    if span.resource.upper() == "GET":
        span.metrics["db.row_count"] = 0.0 if result is None else 1.0  # set_metric's float


def _pipeline_span(integration: Integration, pipeline: Any, *_execute_options: Any) -> Any:
    commands = _queued_commands(pipeline)
    return integration.start_span(
        pipeline, "redis.command", span_type="redis",
        resource="\n".join(_text(args[0]) for args in commands if args),
        tags={"redis.raw_command": "\n".join(_raw_command(_texts(args)) for args in commands)},
        metrics={"redis.pipeline_length": len(commands)}, preset=_peer(integration, pipeline),
    )


def _queued_commands(pipeline: Any) -> list[tuple]:
    """The argument tuples ``pipeline.execute()`` is about to send."""
    # Plain pipelines keep (args, options) pairs in command_stack; cluster pipelines queue
    # PipelineCommand objects: in their execution strategy since redis 6, before that in
    # command_stack (sync) or _command_stack (asyncio).
    strategy = getattr(pipeline, "_execution_strategy", None)
    if strategy is not None:
        queue = strategy._command_queue
    else:
        queue = getattr(pipeline, "command_stack", None) or getattr(pipeline, "_command_stack", ())
    return [command.args if hasattr(command, "args") else command[0] for command in queue]


# The peer tags of each (integration, host, port, db) seen, converted once: a client's pool
# settings are read per call (they may change) but its tags are not rebuilt, nor set one by one.
_PEERS: dict[tuple, SpanTags] = {}
_PEERS_MAX = 256  # a process talks to few Redis servers; past this the cache starts over


def _peer(integration: Integration, client: Any) -> SpanTags:
    """The tags every command of ``client`` carries: ``db.system`` and, when the client has
    one connection pool, the server's host, port and database."""
    pool = getattr(client, "connection_pool", None)  # None on cluster clients
    if pool is None:
        key: tuple = (integration,)
    else:
        kwargs = pool.connection_kwargs
        key = (integration, kwargs.get("host") or kwargs.get("path"), kwargs.get("port"),
               kwargs.get("db") or 0)
    try:
        return _PEERS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable setting: convert it for this call only
        return _peer_tags(integration, key)
    if len(_PEERS) >= _PEERS_MAX:
        _PEERS.clear()
    preset = _PEERS[key] = _peer_tags(integration, key)
    return preset


def _peer_tags(integration: Integration, key: tuple) -> SpanTags:
    if len(key) == 1:
        return integration.span_tags({"db.system": "redis"})
    _, host, port, db = key
    return integration.span_tags({"db.system": "redis", "out.host": host, "server.address": host},
                                 {"out.redis_db": db, "network.destination.port": port})


def _texts(args: tuple) -> list[str]:
    """A command's arguments as text (most are str already: no call for those)."""
    return [arg if type(arg) is str else _text(arg) for arg in args]


def _raw_command(parts: list[str]) -> str:
    """The command's text ``parts`` joined, each cut to ARG_MAX_LENGTH, the total to
    COMMAND_MAX_LENGTH."""
    joined = " ".join(parts)
    if len(joined) <= ARG_MAX_LENGTH:  # no argument, nor the whole, is too long: the usual case
        return joined
    cut: list[str] = []
    length = 0
    for text in parts:
        if len(text) > ARG_MAX_LENGTH:
            text = text[:ARG_MAX_LENGTH] + TOO_LONG
        if length + len(text) > COMMAND_MAX_LENGTH:
            cut.append(text[: COMMAND_MAX_LENGTH - length] + TOO_LONG)
            break
        cut.append(text)
        length += len(text)
    return " ".join(cut)


def _client_probes(module: str, client: str, pipeline: str, *, immediate: bool) -> list:
    """Probes for one flavour of redis-py: a client class and its pipeline class."""
    probes = [
        FunctionProbe(module, f"{client}.execute_command",
                      on_call=_command_span, on_return=_record_hit),
        FunctionProbe(module, f"{pipeline}.execute", on_call=_pipeline_span),
    ]
    if immediate:
        probes.append(FunctionProbe(module, f"{pipeline}.immediate_execute_command",
                                    on_call=_command_span, on_return=_record_hit))
    return probes


integration = Integration(
    "redis",
    service="redis",
    probes=[
        *_client_probes("redis.client", "Redis", "Pipeline", immediate=True),
        *_client_probes("redis.asyncio.client", "Redis", "Pipeline", immediate=True),
        # A cluster pipeline's WATCH goes through RedisCluster.execute_command.
        *_client_probes("redis.cluster", "RedisCluster", "ClusterPipeline", immediate=False),
        *_client_probes("redis.asyncio.cluster", "RedisCluster", "ClusterPipeline",
                        immediate=False),
    ],
)
