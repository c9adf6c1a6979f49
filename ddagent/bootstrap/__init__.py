"""The directory ``ddagent.auto`` puts on child processes' ``PYTHONPATH``; see sitecustomize.py."""
