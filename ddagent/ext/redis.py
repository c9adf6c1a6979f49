"""Redis tags."""

DEFAULT_SERVICE = "redis"
TYPE = "redis"
CMD = "redis.command"  # the span name
DB = "out.redis_db"  # a metric
RAWCMD = "redis.raw_command"
ARGS_LEN = "redis.args_length"  # a metric
PIPELINE_LEN = "redis.pipeline_length"  # a metric
