"""``qac replay``: type logged sessions into a running server and score what it suggests.

Each session gets its own WebSocket. A query the user only asked (the first of a logged
session, the previous query of a pair) is submitted; every other query is typed one
keystroke at a time, each answer awaited before the next keystroke (so none is superseded),
and then submitted, so the server's session queries are what the user's were. A connection
that drops is opened again once and the session resumed with a ``resume`` frame (session ids
never go in the URL), so the history survives the reconnect as it does in a browser.

Replayed as users (``users`` and ``sign`` given), each session first presents its user's token
in a ``user`` frame, signed as the embedding site signs a signed-in user (:func:`site_signer`),
and one user's sessions are replayed one after another in their order, so that each sees the
personal history the user's earlier submits built.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from indexer.errors import QacError
from indexer.evaluate import Scores
from server.protocol import RATE_LIMITED
from server.users import MAX_USER_ID, MIN_SECRET, SIGNED_IN, Signer

from . import eventloop
from .scripts import Script, Typed

TOP = 10
TOKEN_SECONDS = 3600  # how long a token signed for a replayed user is valid
LENGTH_CAP = 12  # prefixes this long or longer share one row of the by-length table
MAX_RETRIES = 50
REQUIRED_KEYS = ("sessions", "keystrokes", "mrr", "success@10", "keystrokes_saved", "p50_ms", "p95_ms",
                 "p99_ms", "errors")

Progress = Callable[[int], None]
Sign = Callable[[str], str]  # a user id -> a user token
Answer = tuple[dict[str, Any], float]  # a frame and the round trip that brought it, in seconds


class ReplayError(QacError):
    """A replay that cannot start: a bad URL, an unreachable server, nothing to replay."""


@dataclass(frozen=True)
class ReplayOptions:
    """How hard to drive the server; the one source of the defaults of ``qac replay``."""

    concurrency: int = 8
    rate: float | None = None  # keystrokes per second over all sessions; None = as fast as answered
    timeout: float = 10.0  # seconds to wait for one answer (or to connect)
    duration: float | None = None  # start no keystroke after this many seconds

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ReplayError(f"concurrency must be >= 1, got {self.concurrency}")
        for name in ("rate", "timeout", "duration"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ReplayError(f"{name} must be > 0, got {value}")


def rank_of(target: str, suggestions: Sequence[str]) -> int:
    """The 1-based rank of ``target`` in the top ten, 0 if it is not there."""
    top = list(suggestions[:TOP])
    return top.index(target) + 1 if target in top else 0


def keystrokes_saved(target: str, shown: Iterable[tuple[str, Sequence[str]]]) -> int:
    """Characters of ``target`` not typed by a user who picks it as soon as it is among the
    top ten: ``shown`` holds (prefix typed, suggestions) in the order typed."""
    for prefix, suggestions in shown:
        if rank_of(target, suggestions):
            return max(0, len(target) - len(prefix))
    return 0


@dataclass
class Hits:
    """Reciprocal ranks and top-ten hits of a group of keystrokes."""

    n: int = 0
    rr: float = 0.0
    hits: int = 0

    def add(self, rank: int) -> None:
        self.n += 1
        if rank:
            self.rr += 1.0 / rank
            self.hits += 1

    def report(self) -> dict[str, float]:
        n = max(1, self.n)
        return {"n": self.n, "mrr": round(self.rr / n, 4), "success@10": round(self.hits / n, 4)}


def percentiles(seconds: Sequence[float], prefix: str = "") -> dict[str, float | None]:
    """p50, p95 and p99 of durations in seconds, as milliseconds (``None`` when empty)."""
    ms = np.asarray(seconds, dtype=float) * 1000
    return {f"{prefix}p{q}_ms": round(float(np.percentile(ms, q)), 3) if len(ms) else None for q in (50, 95, 99)}


@dataclass
class ReplayStats:
    """Everything a replay counts; :meth:`report` turns it into the report."""

    sessions: int = 0
    completed: int = 0
    sent: int = 0
    all: Hits = field(default_factory=Hits)
    by_length: dict[int, Hits] = field(default_factory=dict)
    sampled: Scores = field(default_factory=Scores)
    chars: int = 0
    saved: int = 0
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    reconnects: int = 0  # connections that dropped and were opened again, the session resumed
    index: str | None = None
    seconds: float = 0.0
    stopped_early: bool = False

    def answer(self, step: Typed, i: int, suggestions: list[str], seconds: float, took_ms: Any) -> None:
        """Score the answer to keystroke ``i`` of ``step``."""
        rank = rank_of(step.target, suggestions)
        self.all.add(rank)
        self.by_length.setdefault(min(len(step.keystrokes[i]), LENGTH_CAP), Hits()).add(rank)
        if i == step.sampled:
            self.sampled.add(step.target, suggestions)
        self.latencies.append(seconds)
        if isinstance(took_ms, (int, float)):
            self.server_ms.append(took_ms / 1000)

    def typed(self, target: str, shown: list[tuple[str, Sequence[str]]]) -> None:
        """A query typed to the end: count the characters picking a suggestion would save."""
        self.chars += len(target)
        self.saved += keystrokes_saved(target, shown)

    def report(self) -> dict[str, Any]:
        sampled = None
        if self.sampled.n:
            sampled = {"n": self.sampled.n, **self.sampled.report()}
        lengths = {(f"{n}+" if n == LENGTH_CAP else str(n)): h.report() for n, h in sorted(self.by_length.items())}
        return {
            "index": self.index,
            "sessions": self.sessions,
            "sessions_completed": self.completed,
            "keystrokes": self.all.n,
            "keystrokes_sent": self.sent,
            **{k: v for k, v in self.all.report().items() if k != "n"},
            "by_length": lengths,
            "sampled": sampled,
            "sampled_mrr": sampled["mrr"] if sampled else None,
            "keystrokes_saved": round(self.saved / self.chars, 4) if self.chars else 0.0,
            "chars_typed": self.chars,
            "chars_saved": self.saved,
            **percentiles(self.latencies),
            **percentiles(self.server_ms, "server_"),
            "keystrokes_per_s": round(self.all.n / self.seconds, 1) if self.seconds else 0.0,
            "seconds": round(self.seconds, 3),
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(sorted(self.errors.items())),
            "dropped": self.errors["dropped"],
            "rate_limited_retries": self.rate_limited,
            "reconnects": self.reconnects,
            "stopped_early": self.stopped_early,
        }


class Pacer:
    """Spaces events at most ``rate`` per second across every task that waits on it."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Client:
    """One WebSocket that sends a message and waits for the answer to it."""

    def __init__(self, ws: ClientConnection, timeout: float):
        self.ws = ws
        self.timeout = timeout
        self.last_id = 0
        self.session: str | None = None

    async def hello(self) -> dict[str, Any]:
        frame = await self._wait(lambda m: m.get("type") in ("hello", "error"))
        if frame.get("type") == "hello":
            self.session = frame.get("session")
        return frame

    async def user(self, token: str) -> dict[str, Any]:
        """Present a user token: the ``user`` answer, or the error."""
        await self.ws.send(json.dumps({"type": "user", "token": token}))
        return await self._wait(lambda m: m.get("type") == "user" or (m.get("type") == "error"
                                                                      and m.get("id") is None))

    async def resume(self, session: str) -> dict[str, Any]:
        """Resume ``session`` on this connection (after its first hello): the new hello, or
        the ``bad_session`` error (the connection then keeps its fresh session)."""
        await self.ws.send(json.dumps({"type": "resume", "session": session}))
        return await self.hello()

    async def ask(self, prefix: str) -> Answer:
        """Send a keystroke; its suggestions (or error) and the round trip in seconds."""
        self.last_id += 1
        qid = self.last_id
        started = time.perf_counter()
        await self.ws.send(json.dumps({"type": "query", "id": qid, "prefix": prefix}))
        frame = await self._wait(lambda m: (m.get("type") in ("suggestions", "error") and m.get("id") == qid)
                                 or (m.get("type") == "error" and m.get("id") is None))
        return frame, time.perf_counter() - started

    async def submit(self, query: str) -> Answer:
        """Submit a finished query; the ack (or error) and the round trip in seconds."""
        started = time.perf_counter()
        await self.ws.send(json.dumps({"type": "submit", "query": query}))
        frame = await self._wait(lambda m: m.get("type") == "ack" or (m.get("type") == "error" and m.get("id") is None))
        return frame, time.perf_counter() - started

    async def _wait(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next frame ``wanted`` accepts; older answers on the way are skipped."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            text = await asyncio.wait_for(self.ws.recv(), left)
            try:
                frame = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(frame, dict) and wanted(frame):
                return frame


def site_signer(secret: str, clock: Callable[[], float] = time.time) -> Sign:
    """Signs a user id as the embedding site does (``server/users.py``), under the server's
    secret, valid :data:`TOKEN_SECONDS`; :class:`ReplayError` for a secret the server refuses."""
    if len(secret) < MIN_SECRET:
        raise ReplayError(f"QAC_SECRET is {len(secret)} characters; the server's is at least {MIN_SECRET}")
    signer = Signer(secret.encode("utf-8"), clock)

    def sign(user: str) -> str:
        return signer.sign(SIGNED_IN, user, int(clock()) + TOKEN_SECONDS)

    return sign


def signable(user: str | None) -> bool:
    """Whether ``user`` can name a signed-in user (1 to :data:`MAX_USER_ID` UTF-8 bytes)."""
    return bool(user) and len(user.encode("utf-8")) <= MAX_USER_ID  # type: ignore[union-attr]


def check_url(url: str) -> None:
    """Raise :class:`ReplayError` unless ``url`` is a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ReplayError(f"expected a ws:// or wss:// URL such as ws://127.0.0.1:8000/ws, got {url!r}")


def open_ws(url: str, timeout: float, forwarded_for: str | None = None) -> connect:
    """A client connection to ``url`` as the replay and load tools open it (no proxy).
    ``forwarded_for``: the client address to claim in ``X-Forwarded-For`` (counted by a server
    that trusts this machine as its proxy, as ``qac serve`` trusts 127.0.0.1 by default)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    return connect(url, open_timeout=timeout, close_timeout=2, proxy=None, max_queue=None,
                   additional_headers=headers)


async def probe(url: str, timeout: float = 10.0) -> str:
    """Connect once and read the hello: the model version; :class:`ReplayError` if that fails."""
    check_url(url)
    try:
        async with open_ws(url, timeout) as ws:
            hello = await Client(ws, timeout).hello()
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
        raise ReplayError(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    if hello.get("type") != "hello":
        raise ReplayError(f"{url} answered {hello!r} instead of a hello")
    return str(hello.get("index"))


async def _with_retries(call: Callable[[str], Awaitable[Answer]], text: str, stats: ReplayStats) -> Answer:
    """``call(text)``, again after a pause while the server answers that it is rate limited."""
    for attempt in range(MAX_RETRIES):
        frame, seconds = await call(text)
        if frame.get("type") != "error" or frame.get("code") != RATE_LIMITED:
            break
        stats.rate_limited += 1
        await asyncio.sleep(min(0.5, 0.05 * (attempt + 1)))
    return frame, seconds


async def _identify(client: Client, token: str | None, stats: ReplayStats) -> bool:
    """Present ``token`` (if any) on the connection; whether the server took it."""
    if token is None:
        return True

    async def present(text: str) -> Answer:
        return await client.user(text), 0.0

    answer, _ = await _with_retries(present, token, stats)  # a burst of sessions can meet the address's limit
    if answer.get("type") == "error":
        stats.errors[f"user {answer.get('code')}"] += 1
        return False
    return True


async def _play(url: str, script: Script, stats: ReplayStats, opts: ReplayOptions, pacer: Pacer,
                stop: Callable[[], bool], progress: Progress, token: str | None = None) -> None:
    """Replay one session on its own connection (as the user of ``token``, if given);
    failures are counted, never raised."""
    left = sum(len(step.keystrokes) for step in script)
    stats.sessions += 1
    try:
        try:
            ws = await open_ws(url, opts.timeout)
        except (OSError, InvalidHandshake, TimeoutError):
            stats.errors["connect"] += 1
            return
        try:
            client = Client(ws, opts.timeout)
            await client.hello()
            if not await _identify(client, token, stats):
                return
            reconnects = 1
            for step in script:
                shown: list[tuple[str, Sequence[str]]] = []
                for i, prefix in enumerate(step.keystrokes):
                    if stop():
                        stats.stopped_early = True
                        return
                    await pacer.wait()
                    try:
                        frame, seconds = await _with_retries(client.ask, prefix, stats)
                    except ConnectionClosed:
                        if not reconnects or client.session is None:
                            raise
                        reconnects -= 1
                        stats.reconnects += 1
                        await ws.close()
                        ws = client.ws = await open_ws(url, opts.timeout)
                        await client.hello()
                        await client.resume(client.session)
                        await _identify(client, token, stats)
                        client.last_id = 0
                        frame, seconds = await _with_retries(client.ask, prefix, stats)
                    stats.sent += 1
                    left -= 1
                    progress(1)
                    if frame.get("type") == "error":
                        stats.errors[str(frame.get("code"))] += 1
                        shown.append((prefix, []))
                        continue
                    suggestions = [str(item.get("query")) for item in frame.get("items", [])]
                    stats.answer(step, i, suggestions, seconds, frame.get("took_ms"))
                    shown.append((prefix, suggestions))
                if step.keystrokes:
                    stats.typed(step.target, shown)
                ack, _ = await _with_retries(client.submit, step.target, stats)
                if ack.get("type") == "error":
                    stats.errors[str(ack.get("code"))] += 1
            stats.completed += 1
        finally:
            await ws.close()
    except ConnectionClosed:
        stats.errors["dropped"] += 1
    except TimeoutError:
        stats.errors["timeout"] += 1
    except OSError:
        stats.errors["dropped"] += 1
    finally:
        if left:
            progress(left)


def _by_user(scripts: Sequence[Script], users: Sequence[str | None] | None) -> list[list[tuple[Script, str | None]]]:
    """The scripts in groups replayed one after another: a user's, in their order (groups in
    the order of the users' first sessions); a script without a user is a group of its own."""
    if users is None:
        return [[(script, None)] for script in scripts]
    if len(users) != len(scripts):
        raise ValueError("one user (or None) per script")
    groups: list[list[tuple[Script, str | None]]] = []
    mine: dict[str, list[tuple[Script, str | None]]] = {}
    for script, user in zip(scripts, users):
        if not signable(user):
            groups.append([(script, None)])
        elif user in mine:
            mine[user].append((script, user))  # type: ignore[index]
        else:
            groups.append(mine.setdefault(user, [(script, user)]))  # type: ignore[arg-type]
    return groups


async def replay(url: str, scripts: Sequence[Script], options: ReplayOptions | None = None,
                 progress: Progress | None = None, users: Sequence[str | None] | None = None,
                 sign: Sign | None = None) -> dict[str, Any]:
    """Replay ``scripts`` against the server at ``url``, ``options.concurrency`` at a time;
    the report. With ``users`` (one per script, None: unknown) and ``sign``, each session is
    replayed as its user (the module's docstring). Raises :class:`ReplayError` if the server
    cannot be reached at all."""
    opts = options or ReplayOptions()
    if not scripts:
        raise ReplayError("nothing to replay: no session with a query to type")
    stats = ReplayStats(index=await probe(url, opts.timeout))
    pacer = Pacer(opts.rate)
    started = time.monotonic()
    deadline = started + opts.duration if opts.duration else math.inf
    tick = progress or (lambda n: None)
    groups = _by_user(scripts, users if sign is not None else None)
    queue = iter(groups)

    def stop() -> bool:
        return time.monotonic() >= deadline

    async def worker() -> None:
        for group in queue:
            for script, user in group:
                if stop():
                    stats.stopped_early = True
                    tick(sum(len(step.keystrokes) for step in script))
                    continue
                token = sign(user) if sign is not None and user is not None else None
                await _play(url, script, stats, opts, pacer, stop, tick, token)

    await asyncio.gather(*(worker() for _ in range(min(opts.concurrency, len(groups)))))
    stats.seconds = time.monotonic() - started
    return {"url": url, **stats.report()}


def run_replay(url: str, scripts: Sequence[Script], options: ReplayOptions | None = None, *,
               quiet: bool = True, users: Sequence[str | None] | None = None,
               sign: Sign | None = None) -> dict[str, Any]:
    """:func:`replay` in a fresh event loop, with a progress bar on stderr unless ``quiet``."""
    from tqdm import tqdm

    total = sum(len(step.keystrokes) for script in scripts for step in script)

    async def run() -> dict[str, Any]:
        await probe(url, (options or ReplayOptions()).timeout)  # fail before drawing a bar
        with tqdm(total=total, desc="replay", unit="key", disable=quiet or None, leave=False,
                  dynamic_ncols=True) as bar:
            return await replay(url, scripts, options, bar.update, users, sign)

    return eventloop.run(run())


def format_report(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines and a by-prefix-length table."""
    def ms(key: str) -> str:
        value = report.get(key)
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"replayed {report['sessions']:,} sessions ({report['sessions_completed']:,} to the end), "
        f"{report['keystrokes']:,} keystrokes answered in {report['seconds']:.1f} s "
        f"({report['keystrokes_per_s']:,.1f}/s) against {report['url']} (model {report['index']})",
        f"  all keystrokes     MRR@10 {report['mrr']:.4f}  success@10 {report['success@10']:.4f}",
    ]
    if report["sampled"]:
        s = report["sampled"]
        lines.append(f"  sampled prefix     MRR@10 {s['mrr']:.4f}  success@1 {s['success@1']:.4f}  "
                     f"success@10 {s['success@10']:.4f}  BLEU {s['bleu']:.4f}  (n {s['n']:,})")
    lines += [
        f"  keystrokes saved   {report['keystrokes_saved']:.1%} of {report['chars_typed']:,} characters",
        f"  round trip ms      p50 {ms('p50_ms')}  p95 {ms('p95_ms')}  p99 {ms('p99_ms')}   "
        f"(server: p50 {ms('server_p50_ms')}  p99 {ms('server_p99_ms')})",
        f"  errors             {report['errors']:,}"
        + (" (" + ", ".join(f"{k} {v}" for k, v in report["errors_by_kind"].items()) + ")" if report["errors"] else "")
        + f"; dropped connections {report['dropped']:,}; rate-limited retries {report['rate_limited_retries']:,}",
    ]
    if report["stopped_early"]:
        lines.append("  stopped at the --duration limit before every session was replayed")
    lines.append(f"  {'prefix length':<16}{'n':>9}{'MRR@10':>10}{'success@10':>12}")
    for length, row in report["by_length"].items():
        lines.append(f"  {length:<16}{row['n']:>9,}{row['mrr']:>10.4f}{row['success@10']:>12.4f}")
    return "\n".join(lines)
