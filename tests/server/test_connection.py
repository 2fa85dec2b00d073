"""A WebSocket connection's behaviour, end to end (a real uvicorn, a real ``websockets``
client): hello, keystrokes and their ranking, submits and the session store, resumes, bad
frames, query ids and rate limits. The attacks live in test_hardening.py and test_security.py;
the session's copy of its queries alone in test_session_queries.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from indexer.model import Model
from server import app as app_module
from server import completer as completer_module
from server import connection, session_queries
from server.app import create_app
from server.config import ServerConfig
from server.sessions import MemorySessionStore
from tests.support import (
    ask,
    items_of,
    queries_of,
    query_frame,
    recv_json,
    resume,
    running,
    session_frame,
    submit_frame,
)

pytestmark = pytest.mark.anyio

async def test_hello_names_a_new_session_and_the_model_version(server: str, small_model: Model) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        hello = await recv_json(ws)
    assert hello["type"] == "hello"
    assert hello["index"] == small_model.version
    assert len(hello["session"]) >= 16
    assert hello["queries"] == []

async def test_hello_tells_the_connections_limits(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), max_prefix=120, rate=7.5, burst=9)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            hello = await recv_json(ws)
    assert hello["limits"] == {"max_prefix": 120, "rate": 7.5, "burst": 9}

async def test_a_keystroke_is_answered_with_its_id_and_the_models_ranking(
    server: str, small_model: Model
) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        first = await ask(ws, 7, "New  Y")
        second = await ask(ws, 8, "b")
    assert first["type"] == "suggestions"
    assert first["id"] == 7 and second["id"] == 8
    assert first["prefix"] == "new y"
    assert first["items"] == items_of(small_model, "New  Y")
    assert second["items"] == items_of(small_model, "b")
    assert first["took_ms"] >= 0

async def test_submitted_queries_change_the_ranking_as_model_complete_does(
    server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        before = await ask(ws, 1, prefix, context=True)
        await ws.send(submit_frame(prev.upper() + "!"))
        assert session_frame(await recv_json(ws)) == {"type": "ack", "queries": [prev], "added": True}
        after = await ask(ws, 2, prefix, context=True)
        unasked = await ask(ws, 3, prefix)
    assert before["items"] == items_of(small_model, prefix)
    assert after["items"] == items_of(small_model, prefix, [prev])
    assert after["items"] != before["items"]
    assert before["context"] is False and after["context"] is True
    assert "context" not in unasked and unasked["items"] == after["items"]  # not asked: not computed

class SlowStore(MemorySessionStore):
    """A memory store whose writes take as long as a store far away under load; it notes its
    calls in ``calls``, and each one made is in ``SlowStore.opened``."""

    opened: list[SlowStore] = []
    gate: threading.Event | None = None  # when a test sets one, writes wait for it instead of a second

    def __init__(self, url: str, ttl: float, max_queries: int, max_sessions: int, *_: Any) -> None:
        super().__init__(ttl, max_queries, max_sessions)
        self.calls: list[str] = []
        self.written_at: list[float] = []  # time.monotonic() of each extend call
        SlowStore.opened.append(self)

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        self.calls.append("extend")
        self.written_at.append(time.monotonic())
        if SlowStore.gate is None:
            await asyncio.sleep(1.0)
        else:
            await asyncio.to_thread(SlowStore.gate.wait, 30)
        return await super().extend(sid, queries, owner)

    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        self.calls.append("queries")
        return await super().queries(sid, owner)

@pytest.fixture
def slow_server(small_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server whose session store takes a second per write."""
    monkeypatch.setattr(app_module, "open_store", SlowStore)
    monkeypatch.setattr(SlowStore, "opened", [])
    config = ServerConfig(index=str(small_model_dir), sessions="redis://slow.invalid/0")
    with running(create_app(config), config) as server:
        yield server

async def test_a_keystroke_after_a_submit_does_not_wait_for_the_store(
    slow_server: str, small_model: Model, history_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prev, prefix = history_pair
    gate = threading.Event()  # the store's write is held until the keystroke is answered
    monkeypatch.setattr(SlowStore, "gate", gate)
    async with connect(f"ws://{slow_server}/ws") as ws:
        await recv_json(ws)
        await ws.send(submit_frame(prev))
        await ws.send(query_frame(1, prefix))
        try:
            first = await recv_json(ws, timeout=20)
        finally:
            gate.set()
        second = await recv_json(ws)
    assert first["type"] == "suggestions"  # answered while the write was held
    assert first["items"] == items_of(small_model, prefix, [prev])  # ranked with the submit
    assert session_frame(second) == {"type": "ack", "queries": [prev], "added": True}

async def test_a_submit_costs_the_store_one_write_and_no_read(slow_server: str, history_pair: tuple[str, str]) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{slow_server}/ws") as ws:
        await recv_json(ws)
        await ws.send(submit_frame(prev))
        await ws.send(query_frame(1, prefix))  # starts a sync of its own while the submit is written
        frames = [await recv_json(ws), await recv_json(ws)]
        await asyncio.sleep(0.2)  # a read that followed the write would have begun
    assert sorted(f["type"] for f in frames) == ["ack", "suggestions"]
    assert SlowStore.opened[-1].calls == ["extend"]

async def test_a_submit_is_written_once_the_keystroke_after_it_is_answered(
    slow_server: str, history_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rank = completer_module.rank_keystroke

    def slow_rank(*args: Any) -> Any:  # half a second per keystroke
        time.sleep(0.5)
        return rank(*args)

    monkeypatch.setattr(completer_module, "rank_keystroke", slow_rank)
    prev, prefix = history_pair
    async with connect(f"ws://{slow_server}/ws") as ws:
        await recv_json(ws)
        sent = time.monotonic()
        await ws.send(submit_frame(prev))
        await ws.send(query_frame(1, prefix))
        frames = [await recv_json(ws), await recv_json(ws)]
    assert [f["type"] for f in frames] == ["suggestions", "ack"]
    # The store round trip and the ack after it no longer share the event loop with that ranking.
    assert SlowStore.opened[-1].written_at[0] - sent >= 0.45

async def test_submits_on_their_way_to_a_slow_store_stay_in_the_sessions_queries(
    slow_server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{slow_server}/ws") as ws:
        await recv_json(ws)
        await ws.send(submit_frame("weather"))
        await ws.send(submit_frame(prev))
        first = await recv_json(ws)  # the first written; the second on its way
        answer = await ask(ws, 1, prefix)
        second = await recv_json(ws)
    assert first["queries"] == second["queries"] == ["weather", prev]
    assert answer["items"] == items_of(small_model, prefix, ["weather", prev])
    assert answer["items"] != items_of(small_model, prefix, ["weather"])

async def test_a_submit_made_just_before_leaving_is_written_all_the_same(slow_server: str) -> None:
    async with connect(f"ws://{slow_server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(submit_frame("weather"))
    await asyncio.sleep(1.5)  # the store's second
    async with connect(f"ws://{slow_server}/ws") as ws:
        hello = await resume(ws, session)
    assert hello["queries"] == ["weather"]

async def test_context_is_false_when_the_session_queries_leave_the_list_as_it_was(
    server: str, small_model: Model, neutral_pair: tuple[str, str]
) -> None:
    prev, prefix = neutral_pair
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(submit_frame(prev))
        await recv_json(ws)
        answer = await ask(ws, 1, prefix, context=True)
    assert [item["query"] for item in answer["items"]] == queries_of(small_model, prefix)
    assert answer["context"] is False

async def test_an_ack_carries_the_sessions_queries_and_whether_the_query_was_added(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        acks = []
        for text in ["Weather!", "\u2615", "!!!", "New  York"]:
            await ws.send(submit_frame(text))
            acks.append(await recv_json(ws))
    assert [(a["added"], a["queries"]) for a in map(session_frame, acks)] == [
        (True, ["weather"]), (False, ["weather"]), (False, ["weather"]), (True, ["weather", "new york"])
    ]

async def test_a_session_keeps_its_newest_queries_only(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), session_queries=3)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            acks = []
            for q in ["one", "two", "three", "four", "!!!"]:
                await ws.send(submit_frame(q))
                acks.append(await recv_json(ws))
    assert [len(session_frame(a)["queries"]) for a in acks] == [1, 2, 3, 3, 3]
    assert acks[-1]["queries"] == ["two", "three", "four"]

async def test_reconnecting_with_the_session_id_keeps_its_queries(
    server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(submit_frame(prev))
        await recv_json(ws)
    async with connect(f"ws://{server}/ws") as ws:
        hello = await resume(ws, session)
        answer = await ask(ws, 1, prefix)
    assert hello["session"] == session
    assert session_frame(hello)["queries"] == [prev]
    assert answer["items"] == items_of(small_model, prefix, [prev])

async def test_a_resumed_sessions_hello_carries_its_queries_oldest_first(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        for text in ["Weather?", "\u2615", "new  york", "weather"]:
            await ws.send(submit_frame(text))
            await recv_json(ws)
    async with connect(f"ws://{server}/ws") as ws:
        hello = await resume(ws, session)
    assert (hello["type"], hello["session"]) == ("hello", session)
    assert session_frame(hello)["queries"] == ["weather", "new york", "weather"]

async def test_a_resume_after_a_restart_on_the_memory_store_says_the_queries_were_not_restored(
    config: ServerConfig,
) -> None:
    """The page can tell its user that a restart lost the session: the hello answering a resume
    says whether the store gave queries back."""
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            session = (await recv_json(ws))["session"]
            await ws.send(submit_frame("weather"))
            await recv_json(ws)
        async with connect(f"ws://{server}/ws") as ws:
            kept = await resume(ws, session)
        assert (kept["queries"], kept["restored"]) == (["weather"], True)
    with running(create_app(config), config) as server:  # a new process: the memory store is empty
        async with connect(f"ws://{server}/ws") as ws:
            fresh = await recv_json(ws)
            assert "restored" not in fresh  # only a hello answering a resume says it
            await ws.send(json.dumps({"type": "resume", "session": session}))
            lost = await recv_json(ws)
    assert (lost["type"], lost["session"], lost["queries"], lost["restored"]) == ("hello", session, [], False)

async def test_another_tabs_submit_reaches_a_connection_when_it_next_reads_the_session(
    server: str, small_model: Model, history_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{server}/ws") as first:
        session = (await recv_json(first))["session"]
        async with connect(f"ws://{server}/ws") as second:
            await resume(second, session)
            assert (await ask(second, 1, prefix))["items"] == items_of(small_model, prefix, [])
            await first.send(submit_frame(prev))
            await recv_json(first)
            monkeypatch.setattr(session_queries, "REFRESH_SECONDS", 0.0)
            # The keystroke that finds the refresh due starts it and ranks with what it has.
            assert (await ask(second, 2, prefix))["items"] == items_of(small_model, prefix, [])
            assert (await ask(second, 3, prefix))["items"] == items_of(small_model, prefix, [prev])

@pytest.mark.parametrize("session", ["no-such-session-000000", "short", ""])
async def test_an_unknown_or_malformed_session_id_is_refused_and_the_fresh_session_stays(
    server: str, session: str
) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        refused = await resume(ws, session)
        await ws.send(submit_frame("weather"))
        ack = await recv_json(ws)
    assert (refused["type"], refused["code"]) == ("error", "bad_session")
    assert session_frame(ack) == {"type": "ack", "queries": ["weather"], "added": True}

@pytest.mark.parametrize(
    ("frame", "code", "qid", "frame_type"),
    [
        ("{not json", "bad_json", None, None),
        ('["query"]', "bad_message", None, None),
        ('{"type": "ping", "id": 3}', "unknown_type", 3, None),
        ('{"type": "query", "id": "1", "prefix": "a"}', "bad_message", None, "query"),
        ('{"type": "query", "id": 4}', "bad_message", 4, "query"),
        (json.dumps({"type": "query", "id": 5, "prefix": "a" * 201}), "too_long", 5, "query"),
        (json.dumps({"type": "submit", "query": "a" * 201}), "too_long", None, "submit"),
        (json.dumps({"type": "query", "id": -6, "prefix": "a"}), "bad_message", None, "query"),
        (json.dumps({"type": "query", "id": 2**60, "prefix": "a"}), "bad_message", None, "query"),
        ('{"type": "query", "id": 6.0, "prefix": "a"}', "bad_message", None, "query"),
        (json.dumps({"type": "query", "id": 6, "prefix": "a\x00\x1b[2J"}), "bad_message", 6, "query"),
        (json.dumps({"type": "submit", "query": "a\u2028b\x7f"}), "bad_message", None, "submit"),
        (b"\x00binary", "binary_frame", None, None),
        ('{"type": "user", "token": "v1.a.forged"}', "bad_user", None, "user"),
        ('{"type": "forget"}', "no_user", None, "forget"),
        ('{"type": "remove", "query": "weather"}', "no_user", None, "remove"),
        ('{"type": "resume", "session": "made up"}', "bad_session", None, "resume"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_stays_open(
    server: str, frame: str | bytes, code: str, qid: int | None, frame_type: str | None
) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(frame)
        error = await recv_json(ws)
        answer = await ask(ws, 100, "a")
    assert error["type"] == "error"
    assert (error["code"], error["id"], error.get("for")) == (code, qid, frame_type)
    assert ("for" in error) == (frame_type is not None)  # omitted, never null
    assert error["message"]
    assert answer["type"] == "suggestions" and answer["id"] == 100

async def test_a_query_id_that_does_not_increase_is_refused(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ask(ws, 10, "a")
        stale = await ask(ws, 10, "ab")
        fresh = await ask(ws, 11, "ab")
    assert (stale["type"], stale["code"], stale["id"], stale["for"]) == ("error", "stale_id", 10, "query")
    assert (fresh["type"], fresh["id"]) == ("suggestions", 11)

async def test_superseded_keystrokes_are_skipped_and_ids_never_go_backwards(server: str) -> None:
    typed = "new york city hotels and restaurants near times square ok"
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        for i in range(1, 41):  # the burst the default rate limit allows
            await ws.send(query_frame(i, typed[:i]))
        answers: list[dict[str, Any]] = []
        while not answers or answers[-1]["id"] != 40:
            answers.append(await recv_json(ws))
    ids = [a["id"] for a in answers]
    assert all(a["type"] == "suggestions" for a in answers)
    assert ids == sorted(set(ids))
    assert answers[-1]["prefix"] == typed[:40]

async def test_messages_above_the_rate_are_refused_until_it_recovers(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]  # the connection's bucket's clock: it moves only when the test says so
    monkeypatch.setattr(connection, "TokenBucket", functools.partial(connection.TokenBucket, clock=lambda: now[0]))
    config = ServerConfig(index=str(small_model_dir), rate=20, burst=5)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            for i in range(1, 13):
                await ws.send(query_frame(i, "a"))
            frames = [await recv_json(ws)]
            while sum(f["type"] == "error" for f in frames) < 7:  # the 7 over the burst of 5
                frames.append(await recv_json(ws))
            now[0] += 1.0  # a second later the bucket is full again
            await ws.send(query_frame(13, "b"))
            while frames[-1]["type"] != "suggestions" or frames[-1]["id"] != 13:
                frames.append(await recv_json(ws))
    errors = [f for f in frames if f["type"] == "error"]
    assert {(f["code"], f["for"]) for f in errors} == {("rate_limited", "query")}
    assert [f["id"] for f in errors] == list(range(6, 13))

async def test_a_connection_over_its_rate_is_read_no_faster_than_the_rate(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), rate=2, burst=2, rate_limit_close=2)
    answered = []
    with running(create_app(config), config) as server, contextlib.suppress(ConnectionClosed):
        # (the client's close waits behind its unread frames until the server closes it, 1008)
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            for i in range(1, 51):
                await ws.send(query_frame(i, "a"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while True:
                        answered.append(await recv_json(ws))
    # Without the pause after a refusal, all 50 were answered at once (2 ranked, 48 refused).
    assert 3 <= len(answered) < 20
    assert any(f.get("code") == "rate_limited" for f in answered)
