"""Error tags (``error.message`` is today's name of the seed's ``error.msg``)."""

ERROR_MSG = "error.message"
ERROR_TYPE = "error.type"
ERROR_STACK = "error.stack"

# The seed's short aliases.
MSG = ERROR_MSG
TYPE = ERROR_TYPE
STACK = ERROR_STACK
