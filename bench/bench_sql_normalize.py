"""Cost of SQL normalisation (ddagent/sql.py) per query, cached and uncached.

    python bench/bench_sql_normalize.py [--rounds 7] [--calls 20000]

Stdlib and ddagent only. Four queries: a short lookup, a join with an IN list and comments, a
200-row bulk insert (too long to be cached), and the short lookup with a new literal on every
call (so the cache never hits). The table shows the median and minimum microseconds per call
over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ddagent.sql import _normalize, normalize_query

SHORT = "SELECT id, name, email FROM users WHERE id = 42"
JOIN = ("SELECT u.id, o.total /* report */ FROM users u JOIN orders o ON o.user_id = u.id "
        "WHERE u.status IN ('active', 'trial', 'paid') AND o.created > '2024-01-01' -- recent\n"
        "AND o.total > 10.5 ORDER BY o.total DESC LIMIT 50")
BULK = "INSERT INTO events (id, kind, payload) VALUES " + ", ".join(
    f"({i}, 'click', '{{\"x\": {i}}}')" for i in range(200))


def per_call_us(func, queries, calls: int) -> float:
    start = time.perf_counter_ns()
    for i in range(calls):
        func(queries[i % len(queries)])
    return (time.perf_counter_ns() - start) / calls / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    options = parser.parse_args()
    fresh = [SHORT.replace("42", str(i)) for i in range(options.calls)]
    cases = {
        "short, cached": (normalize_query, [SHORT]),
        "short, uncached": (_normalize, [SHORT]),
        "short, new literal each call": (normalize_query, fresh),
        "join + IN + comments, uncached": (_normalize, [JOIN]),
        f"bulk insert ({len(BULK)} chars)": (normalize_query, [BULK]),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(options.rounds):
        for name, (func, queries) in cases.items():
            calls = options.calls if len(queries[0]) < 1000 else max(1, options.calls // 50)
            results[name].append(per_call_us(func, queries, calls))
    print(f"{'case':40} {'median us':>10} {'min us':>10}")
    for name, values in results.items():
        print(f"{name:40} {statistics.median(values):10.2f} {min(values):10.2f}")


if __name__ == "__main__":
    main()
