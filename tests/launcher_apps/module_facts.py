"""Imports ~200 stdlib and third-party modules and prints what the import system made of them.

Run plainly and under ``python -m ddagent``: the outputs must be identical. Under the launcher
every one of these names is also watched by the import finder (the worst case for it), and the
number of callbacks that ran goes to stderr.
"""

import importlib
import importlib.resources
import json
import sys

MODULES = """
abc argparse array ast asyncio asyncio.events asyncio.tasks base64 bdb binascii bisect bz2
calendar cmath cmd code codecs codeop collections collections.abc colorsys compileall
concurrent.futures concurrent.futures.thread configparser contextlib contextvars copy copyreg
cProfile csv ctypes ctypes.util dataclasses datetime decimal difflib dis doctest email
email.message email.mime.text email.parser email.utils encodings.idna enum errno filecmp
fileinput fnmatch fractions ftplib functools gc getopt getpass gettext glob graphlib gzip
hashlib heapq hmac html html.parser http http.client http.cookies http.server imaplib
importlib.abc importlib.machinery importlib.metadata importlib.util inspect io ipaddress
itertools json json.decoder json.encoder json.tool keyword linecache locale logging
logging.config logging.handlers lzma mailbox marshal math mimetypes mmap modulefinder
multiprocessing multiprocessing.pool multiprocessing.queues netrc numbers opcode operator
optparse os pathlib pdb pickle pickletools pkgutil platform plistlib poplib posixpath pprint
profile pstats py_compile pyclbr pydoc queue quopri random re reprlib rlcompleter runpy sched
secrets selectors shelve shlex shutil signal site smtplib socket socketserver sqlite3 ssl stat
statistics string stringprep struct subprocess symtable sysconfig tabnanny tarfile tempfile
textwrap threading timeit token tokenize trace traceback tracemalloc types typing
unicodedata unittest unittest.mock urllib urllib.error urllib.parse urllib.request uuid
warnings wave weakref wsgiref wsgiref.simple_server xml xml.dom.minidom xml.etree.ElementTree
xml.sax xmlrpc xmlrpc.client zipapp zipfile zipimport zlib zoneinfo
xml_does_not_exist
pytest _pytest _pytest.python _pytest.fixtures pluggy iniconfig packaging packaging.version
hypothesis hypothesis.strategies redis redis.client redis.connection msgpack urllib3
urllib3.util.retry urllib3.poolmanager wrapt bytecode
""".split()

# Leaf modules whose reload has no side effect on the others.
RELOADED = """
colorsys textwrap shlex fnmatch glob difflib html netrc quopri sched getopt filecmp
reprlib keyword json.tool graphlib zipapp packaging.version iniconfig
""".split()


def outcome(call):
    """What ``call()`` returned, or the type of what it raised (both runs must agree)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the exception type is the fact
        return f"raised {type(exc).__name__}"


def loader_facts(module):
    spec = module.__spec__
    return {
        "spec": type(spec).__name__,
        "spec.loader": type(spec.loader).__name__,
        "spec.name": spec.name,
        "spec.origin": spec.origin,
        "spec.parent": spec.parent,
        "package": spec.submodule_search_locations is not None,
        "__loader__": type(module.__loader__).__name__,
        "same loader": module.__loader__ is spec.loader,
        "__file__": getattr(module, "__file__", None),
    }


def files_facts(name):
    files = importlib.resources.files(name)
    return [type(files).__name__, files.is_dir()]


def facts(name):
    module = outcome(lambda: importlib.import_module(name))
    if isinstance(module, str):
        return {"import": module}
    result = loader_facts(module)
    result["files"] = outcome(lambda: files_facts(name))
    if name in RELOADED:
        reloaded = importlib.reload(module)
        result["reload"] = [reloaded is module, loader_facts(reloaded)]
    return result


fired = []
if "ddagent.hooks.finder" in sys.modules:
    from ddagent.hooks import finder

    for name in MODULES:
        finder.when_imported(name, lambda module: fired.append(module.__name__))

print(json.dumps({name: facts(name) for name in MODULES}, indent=1, sort_keys=True))
print(f"modules: {len(MODULES)}, callbacks run: {len(fired)}", file=sys.stderr)
