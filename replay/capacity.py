"""Capacity: the most human-paced typists a server serves within a latency budget, with no error.

A search over typist counts: double from ``start`` until a run fails (or ``limit`` is reached),
then bisect between the last count served and the first one not, until they are within
``precision`` of each other (a fraction of the count served). Each step is one short load run
(:func:`replay.loadgen.measure`); the server's CPU time is read from its processes
(``/proc/PID/stat``, the server and its workers) around each run, so the report also gives
what one answered keystroke cost the server, whatever else runs on the machine.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scripts import Script, typed_keystrokes

P99_BUDGET_MS = 50.0


@dataclass(frozen=True)
class CapacityConfig:
    """The bounds of the search and what a run must meet to count as served."""

    start: int = 50
    limit: int = 1600
    precision: float = 0.1  # stop bisecting once the bracket is this fraction of the count served
    duration: float = 8.0  # measured seconds of each step
    p99_ms: float = P99_BUDGET_MS

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bound that cannot be searched."""
        if not 1 <= self.start <= self.limit:
            raise ValueError(f"capacity bounds must satisfy 1 <= start <= limit, got {self.start}, {self.limit}")
        if not 0 < self.precision < 1:
            raise ValueError(f"capacity precision must be in (0, 1), got {self.precision}")


def served(report: dict[str, Any], p99_ms: float) -> bool:
    """Whether a load run's report counts as served: answers came, no error, p99 within budget."""
    p99 = report.get("p99_ms")
    return report.get("answered", 0) > 0 and report.get("errors", 0) == 0 and p99 is not None and p99 <= p99_ms


def search(passes: Callable[[int], bool], cfg: CapacityConfig) -> int:
    """The largest count ``passes`` accepts (0 if not even 1), assuming it is monotone: double
    from ``cfg.start``, then bisect to ``cfg.precision``. ``passes`` is called once per count."""
    cfg.check()
    good, bad = 0, None
    n = cfg.start
    while True:
        if passes(n):
            good = n
            if n >= cfg.limit:
                return good
            n = min(2 * n, cfg.limit)
        else:
            bad = n
            break
    while bad - good > max(1, cfg.precision * good):
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return good


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process and its children now alive (Linux /proc):
    a ``qac serve`` and its workers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def find_capacity(run: Callable[[int], dict[str, Any]], cfg: CapacityConfig,
                  cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """Search the capacity with ``run(users)`` (a load run's report); each step's report is kept,
    with ``server_cpu_ms_per_answer`` when ``cpu`` (the server's CPU seconds so far) is given.
    The figure is the count served, and the CPU per answer of the largest run served."""
    steps: list[dict[str, Any]] = []

    def passes(users: int) -> bool:
        before = cpu() if cpu is not None else None
        report = run(users)
        if before is not None and cpu is not None:
            used = cpu() - before
            report["server_cpu_s"] = round(used, 3)
            report["server_cpu_ms_per_answer"] = round(used * 1000 / report["answered"], 3) \
                if report.get("answered") else None
        report["served"] = served(report, cfg.p99_ms)
        steps.append(report)
        return report["served"]

    typists = search(passes, cfg)
    best = max((s for s in steps if s["served"]), key=lambda s: s["users"], default=None)
    return {"typists": typists, "p99_budget_ms": cfg.p99_ms, "limit_reached": typists >= cfg.limit,
            "server_cpu_ms_per_answer": best.get("server_cpu_ms_per_answer") if best else None,
            "p99_ms": best.get("p99_ms") if best else None, "steps": steps}


def ranking_cost(model: Any, scripts: Sequence[Script], limit: int = 3000) -> dict[str, Any]:
    """What ranking the typists' keystrokes costs in process: ``model.complete`` of the first
    ``limit`` keystrokes of ``scripts`` (each query typed after the session's earlier ones, as
    the load sends them), CPU time of this thread per keystroke, in one pass (the keystrokes
    of a load run are mostly new to the server: its memories hold few of them)."""
    keystrokes = list(itertools.islice(typed_keystrokes(scripts), limit))
    start = time.thread_time()
    for prefix, history in keystrokes:
        model.complete(prefix, history, 10)
    used = time.thread_time() - start
    return {"keystrokes": len(keystrokes), "cpu_ms_per_keystroke": round(used * 1000 / max(1, len(keystrokes)), 3)}
