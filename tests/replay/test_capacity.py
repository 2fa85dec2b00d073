"""The capacity search: its bracketing logic, and a search against a fake server whose
behaviour (not its speed) decides how many typists it serves."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from replay.bench import BenchConfig, BenchError
from replay.capacity import CapacityConfig, cpu_seconds, find_capacity, search, served
from replay.loadgen import load
from replay.scripts import Typed, keystrokes_of
from tests.replay.fake_server import fake_server, starts_with

# Typed at a human pace, it lasts longer than a step: every typist's first connection stays open
# from its start (within the ramp) to the end of the step.
LONG = (Typed("new york weather", keystrokes_of("new york weather")),)


@pytest.mark.parametrize("capacity", [0, 1, 7, 49, 50, 99, 100, 137, 799, 1600, 5000])
def test_the_search_finds_the_largest_count_served_within_its_precision(capacity: int) -> None:
    cfg = CapacityConfig(start=50, limit=1600, precision=0.1)
    tried: list[int] = []

    def passes(n: int) -> bool:
        tried.append(n)
        return n <= capacity

    found = search(passes, cfg)
    assert found <= capacity  # never a count that failed
    assert found == min(capacity, cfg.limit) or capacity - found <= max(1, 0.1 * found)
    assert len(tried) == len(set(tried)) and len(tried) <= 16  # each count once, a short search
    assert found in tried or found == 0


def test_the_search_doubles_then_bisects() -> None:
    tried: list[int] = []
    search(lambda n: tried.append(n) or n <= 130, CapacityConfig(start=50, limit=1600, precision=0.1))
    assert tried[:3] == [50, 100, 200] and tried[3] == 150 and sorted(tried[3:]) != tried[3:][::-1]


def test_the_search_stops_at_its_limit() -> None:
    tried: list[int] = []
    assert search(lambda n: tried.append(n) or True, CapacityConfig(start=50, limit=300)) == 300
    assert tried == [50, 100, 200, 300]


@pytest.mark.parametrize("start,limit,precision", [(0, 10, 0.1), (20, 10, 0.1), (1, 10, 0.0), (1, 10, 1.0)])
def test_bounds_that_cannot_be_searched_are_refused(start: int, limit: int, precision: float) -> None:
    with pytest.raises(ValueError):
        search(lambda n: True, CapacityConfig(start=start, limit=limit, precision=precision))


def test_a_run_is_served_only_with_answers_no_error_and_p99_within_budget() -> None:
    ok = {"answered": 10, "errors": 0, "p99_ms": 20.0}
    assert served(ok, 50.0)
    assert not served(ok | {"errors": 1}, 50.0)
    assert not served(ok | {"p99_ms": 50.5}, 50.0)
    assert not served(ok | {"answered": 0, "p99_ms": None}, 50.0)


def test_the_capacity_of_a_fake_server_is_the_typists_it_answers_without_error() -> None:
    """The fake server answers ``overloaded`` to connections beyond 5 at once: the search finds
    5, whatever the machine's speed (the latency budget is out of reach of any delay)."""

    def run(users: int) -> dict[str, Any]:
        async def step() -> dict[str, Any]:
            async with fake_server(starts_with, max_connections=5) as (url, _):
                return await load(url, [LONG], users=users, duration=0.4, ramp=0.1)

        return asyncio.run(step())

    cfg = CapacityConfig(start=1, limit=64, precision=0.1, p99_ms=60_000.0)
    found = find_capacity(run, cfg, lambda: cpu_seconds(os.getpid()))
    assert found["typists"] == 5 and not found["limit_reached"]
    steps = {s["users"]: s for s in found["steps"]}
    assert list(steps) == [1, 2, 4, 8, 6, 5]
    assert all(s["served"] == (n <= 5) for n, s in steps.items())
    assert steps[8]["errors_by_kind"].get("overloaded", 0) > 0
    # Each step says what the process serving it spent per answer (here the test's own).
    assert all(s["server_cpu_ms_per_answer"] is not None for s in steps.values())
    assert found["server_cpu_ms_per_answer"] == steps[5]["server_cpu_ms_per_answer"]


def test_cpu_seconds_counts_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before
    assert cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_qac_bench_hands_its_capacity_flags_to_the_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import replay.bench
    from qac.main import main

    seen: list[BenchConfig] = []
    monkeypatch.setattr(replay.bench, "run_bench", lambda cfg: seen.append(cfg) or "")
    main(["bench", "--log", "l.tsv", "--pairs", "p.jsonl", "--skip-scale", "--capacity-workers", "2,4",
          "--capacity-start", "10", "--capacity-limit", "80", "--capacity-duration", "3"])
    cfg = seen[0]
    assert (cfg.capacity, cfg.capacity_workers, cfg.capacity_sessions) == (True, (2, 4), None)
    assert cfg.capacity_search() == CapacityConfig(start=10, limit=80, duration=3.0)
    main(["bench", "--log", "l.tsv", "--pairs", "p.jsonl", "--skip-scale", "--skip-capacity"])
    assert not seen[1].capacity and seen[1].capacity_search() == CapacityConfig()  # the defaults


def test_bench_refuses_capacity_bounds_it_cannot_search(tmp_path: Path) -> None:
    (tmp_path / "l.tsv").write_text("x")
    (tmp_path / "p.jsonl").write_text("x")
    cfg = BenchConfig(logs=(tmp_path / "l.tsv",), pairs=tmp_path / "p.jsonl", scale=False, capacity_start=100,
                      capacity_limit=10)
    with pytest.raises(BenchError, match="capacity bounds"):
        cfg.check()
    BenchConfig(logs=cfg.logs, pairs=cfg.pairs, scale=False, capacity=False, capacity_start=100,
                capacity_limit=10).check()
