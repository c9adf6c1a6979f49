"""redis-py: ``redis.command`` spans for commands and pipelines.

Every command of a ``Redis`` client goes through ``Redis.execute_command``; a pipeline queues
its commands and sends them in ``Pipeline.execute`` (or at once, in
``Pipeline.immediate_execute_command``, while a ``WATCH`` is active). Those three Python methods
are probed by rewriting their code, so clients and bound methods created before ddagent started
are traced too.

Span: name ``redis.command``, service ``redis``, type ``redis``; resource = the command name
(a pipeline: the names joined by newlines); tag ``redis.raw_command`` = the command with its
arguments (each cut to 100 characters, the whole to 1000); metrics ``redis.args_length`` or
``redis.pipeline_length``, ``out.redis_db``, ``network.destination.port``, and ``db.row_count``
for a ``GET`` (1 on a hit, 0 on a miss).
"""

from __future__ import annotations

from typing import Any

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
    commands = [args for args, _options in pipeline.command_stack]
    return integration.start_span(
        pipeline, "redis.command", span_type="redis",
        resource="\n".join(_text(args[0]) for args in commands if args),
        tags={"redis.raw_command": "\n".join(_raw_command(args) for args in commands),
              **_peer_tags(pipeline)},
        metrics={"redis.pipeline_length": len(commands), **_peer_metrics(pipeline)},
    )


def _peer_tags(client: Any) -> dict:
    kwargs = client.connection_pool.connection_kwargs
    host = kwargs.get("host") or kwargs.get("path")
    return {"db.system": "redis", "out.host": host, "server.address": host}


def _peer_metrics(client: Any) -> dict:
    kwargs = client.connection_pool.connection_kwargs
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


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


integration = Integration(
    "redis",
    service="redis",
    probes=[
        FunctionProbe("redis.client", "Redis.execute_command",
                      on_call=_command_span, on_return=_record_hit),
        FunctionProbe("redis.client", "Pipeline.immediate_execute_command",
                      on_call=_command_span, on_return=_record_hit),
        FunctionProbe("redis.client", "Pipeline.execute", on_call=_pipeline_span),
    ],
)
