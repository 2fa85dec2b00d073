"""The soak's abuser processes (the whole soak runs in tests/e2e/test_soak.py)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from replay.soak import SoakConfig, _abuse_process


def _abuse_then_tell_niceness(cfg: SoakConfig, out: Any, ready: Any) -> None:
    _abuse_process("ws://127.0.0.1:9/ws", cfg, 0.0, out, ready)
    out.put(os.nice(0))


@pytest.mark.parametrize("asked", [{"abuser_nice": 3}, {}])
def test_the_abusers_processes_run_at_the_niceness_asked_by_default_19(tmp_path: Path, asked: dict[str, int]) -> None:
    ctx = multiprocessing.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Event()
    nothing = {"flooders": 0, "garbage_senders": 0, "storm_rate": 0, "hoarder": False, "complete_flooders": 0}
    cfg = SoakConfig(tmp_path, tmp_path, **asked, **nothing)
    process = ctx.Process(target=_abuse_then_tell_niceness, args=(cfg, out, ready))
    process.start()
    try:
        assert out.get(timeout=60) == {}  # no abuse asked, none done
        assert out.get(timeout=10) == min(19, os.nice(0) + asked.get("abuser_nice", 19))
        assert ready.is_set()
    finally:
        process.join(10)
