"""The load generator of ``qac bench``, against the fake server."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from replay import loadgen
from replay.loadgen import LoadStats, chain_pairs, load, run_load
from replay.scripts import Typed, keystrokes_of
from tests.replay.fake_server import VOCAB, fake_server, starts_with

TYPE_NEW_YORK = (Typed("new york times", keystrokes_of("new york times")),)


def pair(prev: str, target: str) -> tuple[Typed, ...]:
    return (Typed(prev), Typed(target, keystrokes_of(target), 0))


def test_pairs_of_one_session_are_chained_into_it() -> None:
    scripts = [pair("a", "b"), pair("b", "c"), pair("x", "y"), (Typed("z", ("z",), 0),), pair("z", "w")]
    assert [[s.target for s in script] for script in chain_pairs(scripts)] == [
        ["a", "b", "c"], ["x", "y"], ["z", "w"]]


def test_the_keystrokes_sent_within_windows_are_reported_pooled() -> None:
    stats = LoadStats(2, True)
    stats.timeline = [(1.0, 0.001, 0.0005), (2.5, 0.002, float("nan")), (3.0, 0.1, 0.09), (5.0, 0.003, 0.002)]
    stats.error_times = [(1.5, "timeout"), (3.5, "dropped"), (9.0, "dropped")]
    pooled = stats.during([(0.0, 2.0), (4.0, 6.0)])  # the first and the last keystroke
    assert (pooled["seconds"], pooled["answered"], pooled["answered_per_s"]) == (4.0, 2, 0.5)
    assert pooled["p50_ms"] == 2.0 and pooled["p99_ms"] < 3.1
    assert pooled["errors_by_kind"] == {"timeout": 1} and pooled["errors"] == 1
    window = stats.during([(2.5, 3.5)])  # start included, end not
    assert window["answered"] == 2 and window["p99_ms"] > 90
    assert window["server_p50_ms"] == 90.0  # a keystroke without the server's time counts only in latency
    assert window["errors"] == 0
    assert stats.during([(6.0, 8.0)])["p99_ms"] is None


def test_the_load_runs_in_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client shares the cores with the server it measures: the leaner loop leaves it more."""
    loops: list[str] = []

    async def spy(url: str, scripts: Any, **kwargs: Any) -> dict[str, Any]:
        loops.append(type(asyncio.get_running_loop()).__module__)
        return {}

    monkeypatch.setattr(loadgen, "load", spy)
    run_load("ws://127.0.0.1:9/ws", [])
    assert loops and loops[0].startswith("uvloop")


@pytest.mark.anyio
async def test_human_paced_sessions_get_every_keystroke_answered() -> None:
    async with fake_server(starts_with) as (url, received):
        report = await load(url, [TYPE_NEW_YORK], users=3, duration=0.6, ramp=0.1)
    assert report["mode"] == "human" and report["errors"] == 0
    assert report["answered"] == report["sent"] > 0 and report["superseded"] == 0
    # three sessions, a keystroke every 150-250 ms each: 4 to 7 a second
    assert 3 * 4 * 0.6 * 0.7 <= report["sent_per_s"] * 0.6 <= 3 * 7 * 0.6 * 1.5 + 3
    assert {m["type"] for m in received} == {"query"}  # time ran out before a query was finished


@pytest.mark.anyio
async def test_the_client_freezes_its_objects_while_it_measures_and_leaves_a_callers_freeze() -> None:
    gc.unfreeze()
    try:
        async with fake_server(starts_with) as (url, _):
            await load(url, [TYPE_NEW_YORK], users=1, duration=0.2, ramp=0.0)
            assert gc.get_freeze_count() == 0  # what it froze is let go
            gc.freeze()
            await load(url, [TYPE_NEW_YORK], users=1, duration=0.2, ramp=0.0)
            assert gc.get_freeze_count() > 0  # the caller's freeze is still there
    finally:
        gc.unfreeze()


@pytest.mark.anyio
async def test_saturation_counts_keystrokes_the_server_skipped_as_superseded() -> None:
    async with fake_server(starts_with, silent=lambda prefix: prefix not in VOCAB) as (url, received):
        report = await load(url, [TYPE_NEW_YORK], users=2, duration=0.3, pause=None, ramp=0.0, timeout=0.5)
    assert report["mode"] == "saturation"
    # Unlike the real server, this one never answers a query cut short when the time is up.
    assert set(report["errors_by_kind"]) <= {"timeout"} and report["errors"] <= 2
    submits = sum(m["type"] == "submit" for m in received)
    assert submits > 2
    # each finished query: 13 keystrokes superseded by the answer to the 14th
    assert report["answered"] >= submits - 2 and report["superseded"] >= 13 * (submits - 2)
    assert report["superseded"] + report["answered"] + report["unanswered"] == report["sent"]


@pytest.mark.anyio
async def test_the_first_keystrokes_after_submits_are_timed_apart_too() -> None:
    async with fake_server(starts_with) as (url, received):
        report = await load(url, [pair("new york", "new york times")], users=1, duration=0.6,
                            pause=(0.005, 0.01), ramp=0.0)
    # One user: what the server received is that user's frames in order.
    after_submit = sum(a["type"] == "submit" and b["type"] == "query" for a, b in zip(received, received[1:]))
    assert after_submit > 2 and report["after_submit_answered"] == after_submit
    assert report["answered"] > after_submit and report["after_submit_p50_ms"] is not None


@pytest.mark.anyio
async def test_dropped_connections_are_counted_and_the_users_reconnect() -> None:
    async with fake_server(starts_with, answers_per_connection=2, abort=True) as (url, _):
        report = await load(url, [TYPE_NEW_YORK], users=2, duration=0.4, pause=(0.01, 0.02), ramp=0.0)
    assert report["errors_by_kind"].get("dropped", 0) >= 2
    assert report["sessions"] > 2 and report["answered"] > 0
