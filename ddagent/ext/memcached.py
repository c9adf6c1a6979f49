"""Memcached tags."""

SERVICE = "memcached"
TYPE = "cache"
CMD = "memcached.cmd"  # the span name
QUERY = "memcached.query"
