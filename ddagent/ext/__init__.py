"""Tag names and values shared by the tracer and the integrations.

The seed's names, with the values today's Datadog tracers use.
"""


class AppTypes:
    """The seed's application types (``set_service_info`` accepts them; Datadog ignores them)."""

    web = "web"
    db = "db"
    cache = "cache"
    worker = "worker"


class SpanTypes:
    """Values of ``Span.span_type``."""

    WEB = "web"
    HTTP = "http"
    SQL = "sql"
    CACHE = "cache"
    REDIS = "redis"
    MONGODB = "mongodb"
    CASSANDRA = "cassandra"
    ELASTICSEARCH = "elasticsearch"
    TEMPLATE = "template"
    WORKER = "worker"
