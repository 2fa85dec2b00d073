"""Concurrent WebSocket load for ``qac bench``: many sessions typing at once, for a fixed time.

Unlike :mod:`replay.replay`, a session here does not wait for an answer before its next
keystroke: a human-paced session types one every 150-250 ms whatever the server does, so a
slow server sees keystrokes pile up and answers only the newest (the others are superseded).
A saturation session types each query with no pause at all and waits only for the answer to
its last keystroke before submitting, so the server is never idle.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import eventloop
from .replay import open_ws, percentiles
from .scripts import Script, Typed

HUMAN_PAUSE = (0.15, 0.25)
GRACE = 5.0  # seconds to wait for the answers still due when the time is up


@dataclass
class LoadStats:
    """What a load run counts; :meth:`report` turns it into one row of the bench."""

    users: int
    paced: bool
    measure_from: float = 0.0  # time.monotonic() after which keystrokes count (the ramp is warm-up)
    seconds: float = 0.0
    sessions: int = 0
    sent: int = 0
    superseded: int = 0
    unanswered: int = 0
    # Each answered keystroke: when it was sent (time.monotonic()), its latency and the
    # server's own time (NaN if not given), all in seconds.
    timeline: list[tuple[float, float, float]] = field(default_factory=list)
    after_submit: list[float] = field(default_factory=list)  # the latencies of first keystrokes after a submit
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[tuple[float, str]] = field(default_factory=list)  # when each error came, and its kind

    def error(self, kind: str) -> None:
        """Count an error of ``kind``, now."""
        self.errors[kind] += 1
        self.error_times.append((time.monotonic(), kind))

    def during(self, windows: Sequence[tuple[float, float]]) -> dict[str, Any]:
        """What the keystrokes sent within ``windows`` (``time.monotonic()`` intervals, start
        included) saw, pooled: answered, their latency and the server's, and the errors."""
        def inside(t: float) -> bool:
            return any(start <= t < end for start, end in windows)

        kept = [answer for answer in self.timeline if inside(answer[0])]
        errors = Counter(kind for t, kind in self.error_times if inside(t))
        seconds = max(sum(end - start for start, end in windows), 1e-9)
        return {
            "users": self.users,
            "seconds": round(seconds, 2),
            "answered": len(kept),
            "answered_per_s": round(len(kept) / seconds, 1),
            **_latencies(kept),
            "errors": sum(errors.values()),
            "errors_by_kind": dict(sorted(errors.items())),
        }

    def report(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        return {
            "users": self.users,
            "mode": "human" if self.paced else "saturation",
            "seconds": round(self.seconds, 2),
            "sessions": self.sessions,
            "sent": self.sent,
            "answered": len(self.timeline),
            "superseded": self.superseded,
            "unanswered": self.unanswered,
            "sent_per_s": round(self.sent / seconds, 1),
            "answered_per_s": round(len(self.timeline) / seconds, 1),
            **_latencies(self.timeline),
            "after_submit_answered": len(self.after_submit),
            **percentiles(self.after_submit, "after_submit_"),
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(sorted(self.errors.items())),
        }


def _latencies(answered: Sequence[tuple[float, float, float]]) -> dict[str, float | None]:
    """Percentiles of the answers' latencies, and of the server's own times where given."""
    return {**percentiles([latency for _, latency, _ in answered]),
            **percentiles([server for _, _, server in answered if server == server], "server_")}  # NaN != NaN


class _Session:
    """One connection: sends keystrokes without waiting, matches answers to them by id."""

    def __init__(self, ws: ClientConnection, stats: LoadStats):
        self.ws = ws
        self.stats = stats
        # id: (sent at, by perf_counter and monotonic, counted, first after a submit)
        self.pending: dict[int, tuple[float, float, bool, bool]] = {}
        self.submitted = False  # the last frame sent was a submit
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False
        self.last_id = 0

    async def send_query(self, prefix: str) -> None:
        self.last_id += 1
        now = time.monotonic()
        counted = now >= self.stats.measure_from
        self.pending[self.last_id] = (time.perf_counter(), now, counted, self.submitted)
        self.submitted = False
        self.idle.clear()
        await self.ws.send(json.dumps({"type": "query", "id": self.last_id, "prefix": prefix}))
        self.stats.sent += counted

    async def submit(self, query: str) -> None:
        await self.ws.send(json.dumps({"type": "submit", "query": query}))
        self.submitted = True

    async def read(self) -> None:
        """Until the connection closes: record answers; an answer supersedes older keystrokes."""
        try:
            await self._read()
        finally:
            self.closed = True
            self.idle.set()

    async def _read(self) -> None:
        stats = self.stats
        async for text in self.ws:
            now = time.perf_counter()
            try:
                frame = json.loads(text)
            except (TypeError, ValueError):
                continue
            kind, qid = frame.get("type"), frame.get("id")
            if kind == "error":
                stats.error(str(frame.get("code")))
                self.pending.pop(qid, None)
            elif kind == "suggestions" and qid in self.pending:
                sent, sent_at, counted, after_submit = self.pending.pop(qid)
                if counted:
                    took = frame.get("took_ms")
                    server = took / 1000 if isinstance(took, (int, float)) else float("nan")
                    stats.timeline.append((sent_at, now - sent, server))
                    if after_submit:
                        stats.after_submit.append(now - sent)
                older = [k for k in self.pending if k < qid]
                stats.superseded += sum(self.pending.pop(k)[2] for k in older)
            if not self.pending:
                self.idle.set()

    async def settle(self, timeout: float) -> None:
        """Wait until every keystroke is answered or superseded; raises ``TimeoutError``, or
        ``ConnectionClosed`` if the server went away meanwhile."""
        await asyncio.wait_for(self.idle.wait(), timeout)
        if self.closed:
            raise ConnectionClosed(None, None)


async def _type(session: _Session, script: Script, pause: tuple[float, float] | None, deadline: float,
                timeout: float, rng: random.Random) -> None:
    """Type and submit the queries of ``script`` until it ends or the time is up."""
    for step in script:
        for prefix in step.keystrokes:
            if time.monotonic() >= deadline:
                return
            await session.send_query(prefix)
            if pause:
                await asyncio.sleep(rng.uniform(*pause))
        if step.keystrokes and pause is None:
            await session.settle(timeout)
        await session.submit(step.target)


async def _user(url: str, scripts: Iterator[Script], stats: LoadStats, pause: tuple[float, float] | None,
                start: float, deadline: float, timeout: float, rng: random.Random,
                address: str | None = None) -> None:
    """One simulated user: session after session until the deadline."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    while time.monotonic() < deadline:
        try:
            ws = await open_ws(url, timeout, address)
        except (OSError, InvalidHandshake, TimeoutError):
            stats.error("connect")
            await asyncio.sleep(0.5)
            continue
        stats.sessions += 1
        session = _Session(ws, stats)
        reader = asyncio.create_task(session.read())
        try:
            await _type(session, next(scripts), pause, deadline, timeout, rng)
            await session.settle(min(GRACE, timeout) if time.monotonic() >= deadline else timeout)
        except TimeoutError:
            stats.error("timeout")
        except (ConnectionClosed, OSError):
            stats.error("dropped")
        finally:
            stats.unanswered += sum(counted for _, _, counted, _ in session.pending.values())
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, ConnectionClosed, OSError):
                pass
            await ws.close()


async def load(url: str, scripts: Sequence[Script], **kwargs: Any) -> dict[str, Any]:
    """:func:`measure`'s report: one row of the bench."""
    return (await measure(url, scripts, **kwargs)).report()


async def measure(url: str, scripts: Sequence[Script], *, users: int, duration: float,
                  pause: tuple[float, float] | None = HUMAN_PAUSE, ramp: float = 1.0, timeout: float = 10.0,
                  seed: int = 0, addresses: bool = False) -> LoadStats:
    """Drive ``url`` with ``users`` concurrent sessions for ``duration`` seconds; what they saw.

    ``pause`` is the range of seconds between one session's keystrokes (``None``: saturation).
    Users start spread over ``ramp`` seconds, which is warm-up: only keystrokes sent in the
    ``duration`` after it count. Each user plays the scripts in turn, shuffled. With
    ``addresses``, each user claims an address of its own (10.x.y.z) in ``X-Forwarded-For``, as
    users behind a proxy arrive, so that the server's per-address limits see separate people.
    """
    typed = [s for s in scripts if any(step.keystrokes for step in s)]
    if not typed:
        raise ValueError("no script types anything")
    rng = random.Random(seed)
    order = list(typed)
    rng.shuffle(order)
    cycle = itertools.cycle(order)
    started = time.monotonic()
    ramp = min(ramp, duration / 4)
    stats = LoadStats(users, pause is not None, measure_from=started + ramp)
    deadline = started + ramp + duration
    # A full collection of this process walks every module's objects: about 50 ms in a soak,
    # during which no answer is read, a pause of the client counted as the server's latency.
    # A freeze the caller made stays: gc.unfreeze() cannot tell its objects from ours.
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        await asyncio.gather(*(
            _user(url, cycle, stats, pause, started + ramp * i / users, deadline, timeout, random.Random(seed + i),
                  user_address(i) if addresses else None)
            for i in range(users)
        ))
    finally:
        if not frozen_before:
            gc.unfreeze()
    stats.seconds = duration
    return stats


def user_address(i: int) -> str:
    """The address simulated user ``i`` claims: 10.0.0.1, 10.0.0.2, ..."""
    return f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}"


def run_load(url: str, scripts: Sequence[Script], **kwargs: Any) -> dict[str, Any]:
    """:func:`load` in a fresh event loop."""
    return eventloop.run(load(url, scripts, **kwargs))


def chain_pairs(scripts: Sequence[Script]) -> list[Script]:
    """Join consecutive pair scripts whose previous query is the query typed just before into
    one session (evaluation pairs keep their sessions' order), so load sessions last as long
    as real ones. For load only: the model then sees the whole session, not just one query."""
    sessions: list[list[Typed]] = []
    for script in scripts:
        if sessions and len(script) == 2 and script[0].target == sessions[-1][-1].target:
            sessions[-1].append(script[1])
        else:
            sessions.append(list(script))
    return [tuple(s) for s in sessions]
