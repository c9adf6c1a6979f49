"""Ends the way argv[1] says: a sys.exit code, an uncaught exception, or a message."""

import sys


def fail(kind):
    if kind == "code":
        sys.exit(3)
    if kind == "message":
        sys.exit("bye")
    if kind == "raise":
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError("chained failure") from exc
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "raise-from-thread-after":
        import threading
        threading.Thread(target=lambda: print("thread done")).start()
        raise RuntimeError("main failed")


fail(sys.argv[1])
print("fell through")
