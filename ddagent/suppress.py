"""Marks ddagent's own I/O so that integrations do not trace it.

The writer's HTTP calls to the agent go through urllib3, which ddagent also instruments; while
:data:`SUPPRESSED` is true in the calling context, client integrations make no span. It lives in
this dependency-free module so that a hook can check it without importing the writer (and
urllib3 with it) at import time.
"""

import contextvars

SUPPRESSED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ddagent_suppressed", default=False
)
