"""The soak's schedule and abuser processes (the whole soak runs in tests/e2e/test_soak.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from replay.soak import SoakConfig, _abuse_process, run_soak, schedule


def test_quiet_and_abused_windows_alternate_quiet_first_and_last(tmp_path: Path) -> None:
    cfg = SoakConfig(tmp_path, tmp_path, quiet_seconds=30, abuse_seconds=40, rounds=2)
    quiet, abused = schedule(cfg, 100.0)
    assert quiet == [(100.0, 110.0), (130.0, 140.0), (160.0, 170.0)]
    assert abused == [(110.0, 130.0), (140.0, 160.0)]


def test_a_soak_without_rounds_is_refused_before_a_server_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="round"):
        run_soak(SoakConfig(tmp_path / "no-model", tmp_path / "no-pairs", rounds=0))


def _abuse_then_tell_scheduling(cfg: SoakConfig, inbox: Any, out: Any, ready: Any) -> None:
    _abuse_process("ws://127.0.0.1:9/ws", cfg, inbox, out, ready)
    out.put((os.nice(0), os.sched_getscheduler(0)))


@pytest.mark.parametrize("asked", [{"abuser_nice": 3, "abuser_idle": False}, {}])
def test_the_abusers_processes_run_as_asked_by_default_idle_and_at_niceness_19(
        tmp_path: Path, asked: dict[str, Any]) -> None:
    ctx = multiprocessing.get_context("spawn")
    inbox, out, ready = ctx.Queue(), ctx.Queue(), ctx.Event()
    nothing = {"flooders": 0, "garbage_senders": 0, "storm_rate": 0, "hoarder": False, "complete_flooders": 0}
    cfg = SoakConfig(tmp_path, tmp_path, **asked, **nothing)
    process = ctx.Process(target=_abuse_then_tell_scheduling, args=(cfg, inbox, out, ready))
    process.start()
    try:
        assert ready.wait(60)
        inbox.put([(0.0, 0.0), (0.0, 0.0)])  # two windows, long over
        counts, over = out.get(timeout=60)
        assert counts == {} and len(over) == 2  # no abuse asked, none done; each window's end told
        niceness, policy = out.get(timeout=10)
        assert niceness == min(19, os.nice(0) + asked.get("abuser_nice", 19))
        assert policy == (os.SCHED_OTHER if asked else os.SCHED_IDLE)
    finally:
        process.join(10)
