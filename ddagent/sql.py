"""SQL query normalisation: literals become ``?`` before query text leaves the process.

Query text can carry personal data (``WHERE email = 'ann@example.com'``), so span resources
built from SQL go through :func:`normalize_query`, which keeps the statement readable::

    SELECT * FROM users WHERE id = 42 AND name IN ('a', 'b')  ->
    SELECT * FROM users WHERE id = ? AND name IN (?)

What is replaced by ``?``: string literals (``'…'`` with ``''`` or backslash escapes, and the
``E''``/``N''``/``X''``/``B''`` forms), PostgreSQL dollar-quoted strings (``$$…$$``,
``$tag$…$tag$``), numbers and ``0x`` hex numbers. ``IN (…)`` lists of literals or placeholders
shrink to ``IN (?)`` and a run of identical ``VALUES`` rows to one row. Comments are removed
and whitespace runs become one space. Kept: identifiers (``"quoted"`` and `` `quoted` `` too,
and digits inside names such as ``t1``), keywords, ``NULL``/``TRUE``/``FALSE``, and driver
placeholders (``%s``, ``%(name)s``, ``?``, ``:name``, ``$1``).

An unterminated string or comment swallows the rest of the text (it becomes ``?``): when in
doubt, hide. Every pattern is linear in the input (no nested quantifiers that can backtrack),
and :func:`normalize_query` never raises: on an unexpected error it returns ``"?"``.

This module knows no database library, so it sits in the core (``hooks/`` modules import it);
whether resources are normalised is ``Config.sql_normalize`` (``DD_TRACE_SQL_NORMALIZE``).
"""

from __future__ import annotations

import functools
import re

from ddagent.stats import STATS

# One pass over the text; the alternatives are tried in order at each position, so a quote
# inside a comment, or "--" inside a string, is never mistaken for the other. Comments count as
# whitespace. Words are matched (and kept) whole, which is both faster than scanning them one
# character at a time and what keeps the digits of "t1" out of the number rule.
_TOKEN = re.compile(
    r"""
      (?P<space>   (?:\s | --[^\n]* | /\*.*?(?:\*/|\Z))+ )
    | (?P<keep>    [A-Za-z_][\w$]*(?!')  |  "(?:[^"]|"")*(?:"|\Z)  |  `[^`]*(?:`|\Z)  |  \$\d+ )
    | (?P<string>  [eEnNxXbB]?'(?:[^'\\]|\\.|'')*(?:'|\Z)
                 | \$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z) )
    | (?P<number>  (?:0[xX][0-9a-fA-F]+ | (?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?) (?![\w$]) )
    """,
    re.VERBOSE | re.DOTALL,
)

_PLACEHOLDER = r"(?:\?|%s|%\(\w+\)s|:\w+|\$\d+)"
# "IN (?, ?, ?)" and "IN (%s, %s)" -> "IN (?)"
_IN_LIST = re.compile(rf"\b(IN) ?\( ?{_PLACEHOLDER}(?: ?, ?{_PLACEHOLDER})* ?\)", re.IGNORECASE)
# "(?, ?), (?, ?), (?, ?)" -> "(?, ?)": multi-row VALUES whose rows read the same
_REPEATED_ROW = re.compile(rf"(\( ?{_PLACEHOLDER}(?: ?, ?{_PLACEHOLDER})* ?\))(?: ?, ?\1)+")

CACHE_SIZE = 512  # distinct query texts remembered (an application runs a bounded set)
CACHED_MAX_LENGTH = 4096  # longer texts (bulk inserts) are rarely repeated: not cached


def _replace_token(match: re.Match) -> str:
    kind = match.lastgroup
    if kind == "keep":
        return match.group()
    if kind == "space":  # whitespace and comments
        return " "
    return "?"


def _normalize(query: str) -> str:
    text = _TOKEN.sub(_replace_token, query).strip()
    if "(" in text:
        text = _IN_LIST.sub(r"\1 (?)", text)
        text = _REPEATED_ROW.sub(r"\1", text)
    return text


_cached_normalize = functools.lru_cache(maxsize=CACHE_SIZE)(_normalize)


def normalize_query(query: str) -> str:
    """``query`` with its literal values replaced by ``?`` (see the module docstring)."""
    try:
        if not isinstance(query, str):
            query = str(query)
        if len(query) <= CACHED_MAX_LENGTH:
            return _cached_normalize(query)
        return _normalize(query)
    except Exception:  # a str subclass with a strange __str__, or a bug here: hide the text
        STATS.incr("sql.normalize.errors")
        return "?"
