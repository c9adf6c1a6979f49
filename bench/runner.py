"""The shared runner: alternating rounds of child processes, statistics and the printed table.

A scenario module declares ``TITLE``, ``CASES``, ``ROWS``, ``TARGETS`` and
``measure(ctx, contender) -> {case: {metric: value}}`` (usually ``ctx.run_child``). The runner
calls ``measure`` for the contenders in turn, A B C D A B C D …, one fresh process each, so slow
drift of the noisy machine hits every contender alike; it then reports per metric the median over
rounds, the spread (min–max) and the ratio to the row's reference contender.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

from bench.child import RESULT_PREFIX
from bench.tracers import CONTENDERS, LABELS

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a case, for every contender."""

    case: str
    metric: str
    label: str
    unit: str
    ratio_to: Optional[str] = "baseline"  # contender the ratio column divides by


@dataclass(frozen=True)
class Target:
    """A target of issue 5: ``value(results)`` compared with ``limit``."""

    label: str
    limit: float
    value: Callable[[Results], Optional[float]]
    unit: str = "×"
    at_least: bool = False  # the target is a floor (value ≥ limit), not a ceiling


@dataclass
class Context:
    """What every measurement needs: interpreters, the live agent, the run's size."""

    python: str
    bin_dir: Path
    agent_url: str
    agent_pid: int  # the test agent's process, whose CPU scenario 3 reports
    otlp_url: str
    quick: bool
    rounds: int

    def env(self, contender: str, **overrides: str) -> dict[str, str]:
        """The environment of a ``contender`` process: where to send, and nothing else."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "OTEL_"))}
        env.update(PYTHONPATH=str(REPO), BENCH_QUICK="1" if self.quick else "0")
        if contender == "otel":
            # Read by bench/tracers.py and by opentelemetry-instrument (scenarios 3 and 4).
            # Only OTel children get them: ddtrace 4 switches to OTLP export when it sees them.
            env.update(
                BENCH_OTLP_URL=self.otlp_url,
                OTEL_SERVICE_NAME="bench",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_EXPORTER_OTLP_ENDPOINT=self.otlp_url,
                OTEL_METRICS_EXPORTER="none",
                OTEL_LOGS_EXPORTER="none",
            )
        else:  # ddagent reads the same variables as ddtrace
            env.update(DD_TRACE_AGENT_URL=self.agent_url, DD_SERVICE="bench")
        env.update(overrides)
        return env

    def run_child(
        self,
        scenario: str,
        contender: str,
        launcher: Optional[list[str]] = None,
        env: Optional[dict[str, str]] = None,
        timeout: float = 900,
    ) -> dict:
        """Run ``bench.child`` for one contender (under ``launcher``, default plain python)."""
        argv = (launcher or [self.python]) + ["-m", "bench.child", scenario, contender]
        try:
            proc = subprocess.run(
                argv, cwd=REPO, env=env or self.env(contender), capture_output=True, text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"na": f"timed out after {timeout:.0f} s"}
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"na": f"exit {proc.returncode}: {last[:160]}"}

    def clear_agent(self) -> None:
        """Empty the test agent's store: it keeps every request in memory."""
        try:
            urllib.request.urlopen(self.agent_url + "/test/session/clear", timeout=10).read()
        except OSError:
            pass


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat``, numbered as in proc(5) less one (``[13]`` is utime).

    The command name (field 2) is cut out by its parentheses: it may hold spaces.
    """
    text = Path(f"/proc/{pid}/stat").read_text()
    head, _, tail = text.rpartition(")")
    number, comm = head.split(" (", 1)
    return [number, comm, *tail.split()]


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid``; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid``: the processes whose parent pid (field 4 of their stat) it
    is."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(proc_stat(int(entry.name))[3]) == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):  # gone meanwhile
                pass
    return sorted(children)


@dataclass
class Results:
    """Every round's figures of one scenario, per (case, contender)."""

    values: dict = field(default_factory=lambda: defaultdict(list))  # (case, who, metric) → [x]
    na: dict = field(default_factory=dict)  # (case, who) → reason
    notes: dict = field(default_factory=dict)  # (case, who) → remark shown as a footnote

    def add(self, contender: str, out: dict, cases: list[str]) -> None:
        for case in cases:
            got = out if "na" in out else out.get(case, {"na": "not measured"})
            if "na" in got:
                self.na.setdefault((case, contender), got["na"])
                continue
            for metric, value in got.items():
                if metric == "note":
                    self.notes[(case, contender)] = value
                else:
                    self.values[(case, contender, metric)].append(float(value))

    def all_na(self, contender: str, cases: list[str]) -> bool:
        return all((case, contender) in self.na for case in cases)

    def series(self, case: str, contender: str, metric: str) -> list[float]:
        return self.values.get((case, contender, metric), [])

    def median(self, case: str, contender: str, metric: str) -> Optional[float]:
        xs = self.series(case, contender, metric)
        return statistics.median(xs) if xs else None


def run_scenario(ctx: Context, module: ModuleType) -> Results:
    results = Results()
    for round_no in range(ctx.rounds):
        for contender in CONTENDERS:
            if round_no and results.all_na(contender, module.CASES):
                continue  # cannot run at all in this run: do not pay for it every round
            print(f"  {module.__name__} round {round_no + 1}/{ctx.rounds}: {contender}",
                  file=sys.stderr, flush=True)
            results.add(contender, module.measure(ctx, contender), module.CASES)
            ctx.clear_agent()
    return results


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


class Footnotes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def _cell(results: Results, row: Row, contender: str, notes: Footnotes) -> str:
    key = (row.case, contender)
    if key in results.na:
        return "n/a " + notes.mark(results.na[key])
    xs = results.series(row.case, contender, row.metric)
    if not xs:
        return "-"
    med = statistics.median(xs)
    text = f"{fmt(med)} ({fmt(min(xs))}–{fmt(max(xs))})" if len(xs) > 1 else fmt(med)
    ref = results.median(row.case, row.ratio_to, row.metric) if row.ratio_to else None
    r = ratio(med, ref)
    if r is not None and contender != row.ratio_to:
        text += f" ×{r:.2f}"
    if key in results.notes:
        text += " " + notes.mark(f"{LABELS[contender]}: {results.notes[key]}")
    return text


def print_table(ctx: Context, scenarios: list[tuple[ModuleType, Results]]) -> None:
    """One table: per row the median (min–max over rounds) and ×ratio to the row's reference."""
    notes = Footnotes()
    header = ["scenario · case · metric", *(LABELS[c] for c in CONTENDERS)]
    lines: list = [header, None]
    for module, results in scenarios:
        lines.append([module.TITLE])
        for row in module.ROWS:
            ref = f" [×: vs {LABELS[row.ratio_to]}]" if row.ratio_to else ""
            lines.append(
                [f"  {row.label} ({row.unit}){ref}"]
                + [_cell(results, row, c, notes) for c in CONTENDERS]
            )
    lines.append(None)
    lines.append(["issue 5 targets (ddagent)", "limit", "measured", "verdict"])
    lines.append(None)
    for module, results in scenarios:
        for target in module.TARGETS:
            value = target.value(results)
            op = "≥" if target.at_least else "≤"
            if value is None:
                measured, verdict = "n/a", "n/a"
            else:
                met = value >= target.limit if target.at_least else value <= target.limit
                measured, verdict = f"{fmt(value)} {target.unit}", "met" if met else "MISSED"
            lines.append([f"  {target.label}", f"{op} {fmt(target.limit)} {target.unit}",
                          measured, verdict])
    widths = [max(len(line[i]) for line in lines if line and len(line) > i)
              for i in range(len(header))]
    title = (f"ddagent benchmark: {ctx.rounds} alternating rounds "
             f"({'quick' if ctx.quick else 'full'}); median (min–max), ×ratio to the reference")
    print("\n" + title)
    rule = "-+-".join("-" * w for w in widths)
    for line in lines:
        if line is None:
            print(rule)
        elif len(line) == 1:
            print(line[0])
        else:
            print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    for i, text in enumerate(notes.texts, 1):
        print(f"[{i}] {text}")
