"""Prints what a program can see of how it was started; run plainly and under the launcher."""

import atexit
import json
import pickle
import sys

MARKER = "the program's own __main__"


class Point:
    def __init__(self, x):
        self.x = x


def describe_main():
    main = sys.modules["__main__"]
    loader = main.__loader__
    return {
        "names": sorted(vars(main)),
        "__name__": main.__name__,
        "__file__": main.__file__,
        "__cached__": main.__cached__,
        "__package__": main.__package__,
        "__spec__": None if main.__spec__ is None else [main.__spec__.name, main.__spec__.origin],
        "__loader__": [type(loader).__name__, getattr(loader, "name", None)],
        "is_this_module": main.__dict__ is globals(),
    }


@atexit.register
def at_exit():
    # Runs after the program body: __main__ must still be the program's module.
    print("atexit:", sys.modules["__main__"].MARKER, pickle.loads(pickle.dumps(Point(2))).x)


facts = {
    "argv": sys.argv,
    "path0": sys.path[0],
    "main": describe_main(),
    "pickled": pickle.loads(pickle.dumps(Point(1))).x,
    "stdin": sys.stdin.read(),
}
print(json.dumps(facts, indent=1, sort_keys=True))
