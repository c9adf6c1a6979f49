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
from ddagent.hooks.registry import FunctionProbe, Integration

ARG_MAX_LENGTH = 100
COMMAND_MAX_LENGTH = 1000
TOO_LONG = "..."


def _command_span(integration: Integration, client: Any, args: tuple, options: dict) -> Any:
    return integration.start_span(
        client, "redis.command", resource=_text(args[0]) if args else "", span_type="redis",
        tags={"redis.raw_command": _raw_command(args), **_peer_tags(client)},
        metrics={"redis.args_length": len(args), **_peer_metrics(client)},
    )


def _record_hit(span: Any, result: Any, client: Any, args: tuple, options: dict) -> None:
    if args and _text(args[0]).upper() == "GET":
        span.set_metric("db.row_count", 0 if result is None else 1)


def _pipeline_span(integration: Integration, pipeline: Any, *_execute_options: Any) -> Any:
    commands = _queued_commands(pipeline)
    return integration.start_span(
        pipeline, "redis.command", span_type="redis",
        resource="\n".join(_text(args[0]) for args in commands if args),
        tags={"redis.raw_command": "\n".join(_raw_command(args) for args in commands),
              **_peer_tags(pipeline)},
        metrics={"redis.pipeline_length": len(commands), **_peer_metrics(pipeline)},
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


def _connection_kwargs(client: Any) -> dict | None:
    pool = getattr(client, "connection_pool", None)  # None on cluster clients
    return None if pool is None else pool.connection_kwargs


def _peer_tags(client: Any) -> dict:
    kwargs = _connection_kwargs(client)
    if kwargs is None:
        return {"db.system": "redis"}
    host = kwargs.get("host") or kwargs.get("path")
    return {"db.system": "redis", "out.host": host, "server.address": host}


def _peer_metrics(client: Any) -> dict:
    kwargs = _connection_kwargs(client)
    if kwargs is None:
        return {}
    return {"out.redis_db": kwargs.get("db") or 0, "network.destination.port": kwargs.get("port")}


def _raw_command(args: tuple) -> str:
    """The command as text: each argument cut to ARG_MAX_LENGTH, the total to COMMAND_MAX_LENGTH."""
    parts: list[str] = []
    length = 0
    for arg in args:
        text = _text(arg)
        if len(text) > ARG_MAX_LENGTH:
            text = text[:ARG_MAX_LENGTH] + TOO_LONG
        if length + len(text) > COMMAND_MAX_LENGTH:
            parts.append(text[: COMMAND_MAX_LENGTH - length] + TOO_LONG)
            break
        parts.append(text)
        length += len(text)
    return " ".join(parts)


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
