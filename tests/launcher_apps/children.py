"""Reports whether ddagent.auto is loaded here, in a subprocess and in a multiprocessing child."""

import json
import multiprocessing
import subprocess
import sys

PROBE = (
    "import json, sys; s = sys.modules.get('sitecustomize');"
    "print(json.dumps(['ddagent.auto' in sys.modules, getattr(s, 'USER_MARK', None),"
    " any(p.endswith('bootstrap') for p in sys.path)]))"
)


def report(queue):
    queue.put("ddagent.auto" in sys.modules)


if __name__ == "__main__":
    child = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=report, args=(queue,))
    process.start()
    spawned = queue.get(timeout=60)
    process.join()
    print(json.dumps({
        "self": "ddagent.auto" in sys.modules,
        "subprocess": json.loads(child.stdout) if child.stdout else child.stderr,
        "spawn": spawned,
        "spawn_exitcode": process.exitcode,
    }))
