"""Sending finished traces to the Datadog trace agent (msgpack /v0.4 over HTTP or a Unix socket).

The writer duck-types spans (see docs/architecture.md) and knows nothing of the tracer or hooks.
"""

from ddagent.writer.agent import AgentWriter

__all__ = ["AgentWriter"]
