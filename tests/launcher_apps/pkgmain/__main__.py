"""``python -m pkgmain``: a package run as a program."""

import sys

print(sys.argv, sys.path[0], __name__, __spec__.name, type(__loader__).__name__, __file__)
