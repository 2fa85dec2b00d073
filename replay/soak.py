"""A soak run: normal typists while others abuse the server, against its own ``qac serve``.

The typists type for the whole run; abuse comes and goes. Quiet windows and abused windows
alternate (quiet first and last), so that the machine's speed, which drifts over minutes,
falls on both sides of the comparison alike; the quiet windows pooled are the reference.
Under abuse, the typists share the server with a flooder (far above the rate limit), garbage
senders (bad JSON, binary frames, bad ids, control characters, oversized frames, invalid
UTF-8), a reconnect storm, a hoarder that opens connections from one address until it is
refused, a ``GET /complete`` flooder, and a model reload half-way. Abusers send on schedule:
frames a busy machine made late go at once, so that the abuse happens however slow the
machine, and the hoarder goes on until refused even past its window. A quiet window starts
once the abusers have closed everything and a little more (``SETTLE``). Every client claims
an address of its own in ``X-Forwarded-For`` (the server trusts 127.0.0.1 as its proxy), the
abusers one each. The report: each window's keystrokes answered and p99, errors by kind on
both sides, and the server's memory before and after.

The abusers run in processes of their own so that their Python does not slow the typists'
measuring loop. Everything shares this machine's cores with the server, but abusers stand for
clients on other machines: by default their processes run under ``SCHED_IDLE`` (and
niceness 19), taking a core only when the server and the typists leave it. The server handles
the same abuse either way, within a few percent (errors answered, connections closed and
refused, ``/complete`` requests answered); only the frames a paused flooder pushes into its
socket, never read, are fewer. ``abuser_idle=False, abuser_nice=0`` makes the abusers compete
with the server's workers for the cores, as on a single box (BENCHMARKS.md#abusers).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import eventloop
from .bench import ServerProcess
from .loadgen import LoadStats, chain_pairs, measure
from .replay import open_ws
from .scripts import Script, scripts_from_pairs

TOKEN = "soak-admin-token"
RAMP = 2.0  # seconds over which the typists start, before they are measured
SETTLE = 0.5  # seconds after the abusers have closed everything before a quiet window starts


@dataclass(frozen=True)
class SoakConfig:
    """What a soak run does; rates are per second."""

    index: Path
    pairs: Path
    reload_index: Path | None = None  # default: reload the same directory
    reload: bool = True
    workers: int = 2
    sessions: str = "memory"  # the server's store; more than one worker needs redis://
    users: int = 100
    quiet_seconds: float = 60.0  # in all, over rounds + 1 windows
    abuse_seconds: float = 120.0  # in all, over ``rounds`` windows
    rounds: int = 4  # abused windows, each between two quiet ones
    flooders: int = 2
    flood_rate: float = 500.0  # messages per second per flooder (the limit is 20)
    garbage_senders: int = 4
    garbage_rate: float = 20.0
    storm_rate: float = 20.0  # connections opened and dropped per second (0: none)
    hoarder: bool = True  # opens connections from one address until refused, holds them
    complete_flooders: int = 8  # concurrent GET /complete loops from one address (0: none)
    abuser_nice: int = 19  # os.nice() of the abusers' processes: > 0 stands for abusers on other machines
    abuser_idle: bool = True  # and SCHED_IDLE: a core only when nothing else wants it
    pairs_limit: int = 2000


# -- abusers ------------------------------------------------------------------------------


def _garbage(rng: random.Random) -> str | bytes:
    """One bad frame; the last two kinds make the server close the connection."""
    kind = rng.randrange(9)
    if kind == 0:
        return "{not json"
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(40))
    if kind == 2:
        return json.dumps({"type": "query", "id": -rng.randrange(1, 10**9), "prefix": "a"})
    if kind == 3:
        return json.dumps({"type": "query", "id": 1.5, "prefix": "a"})
    if kind == 4:
        return json.dumps({"type": "query", "id": rng.randrange(10**6), "prefix": "a\x00\x1b[2J"})
    if kind == 5:
        return json.dumps({"type": "nonsense", "id": 1})
    if kind == 6:
        return json.dumps({"type": "submit", "query": 42})
    if kind == 7:
        return json.dumps({"type": "query", "id": 1, "prefix": "x" * 10_000})  # over the frame limit
    return b'{"type":"query","id":1,"prefix":"\xff\xfe"}'  # invalid UTF-8, sent as text


async def _drain(ws: Any, counts: Counter[str]) -> None:
    """Count what the server answers an abuser, by error code, until it closes."""
    try:
        async for text in ws:
            frame = json.loads(text)
            counts[f"error:{frame['code']}" if frame.get("type") == "error" else frame.get("type", "?")] += 1
    except ConnectionClosed as closed:
        counts[f"closed:{closed.rcvd.code if closed.rcvd else 'abnormal'}"] += 1


async def _abuser(url: str, deadline: float, rate: float, counts: Counter[str], garbage: bool, seed: int) -> None:
    """Frames at ``rate`` a second, on schedule: frames a busy machine made late are sent at
    once, so that a slow abuser still abuses (a flooder still goes over the rate limit)."""
    rng = random.Random(seed)
    qid = 0
    due = time.monotonic()
    while time.monotonic() < deadline:
        try:
            async with open_ws(url, 10, f"192.0.2.{seed % 250 + 1}") as ws:
                counts["connections"] += 1
                await ws.recv()  # hello
                reader = asyncio.create_task(_drain(ws, counts))
                while time.monotonic() < deadline and not reader.done():
                    if garbage:
                        frame = _garbage(rng)
                        bad_text = isinstance(frame, bytes) and frame.startswith(b"{")
                        await ws.send(frame, text=True if bad_text else None)
                    else:
                        qid += 1
                        await ws.send(json.dumps({"type": "query", "id": qid, "prefix": "flood"}))
                    counts["sent"] += 1
                    due += 1 / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not garbage and not reader.done():
                    # A flooder leaves without a closing handshake: its close frame would wait
                    # behind its own frames, which the server reads only at the rate limit.
                    ws.transport.abort()
                reader.cancel()
        except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError):
            counts["dropped"] += 1
            await asyncio.sleep(0.1)


async def _storm(url: str, deadline: float, rate: float, counts: Counter[str]) -> None:
    """Connections that say nothing and go, ``rate`` of them a second, a few at once."""

    async def one(n: int) -> None:
        try:
            async with open_ws(url, 10, f"198.18.{n // 250 % 250}.{n % 250 + 1}") as ws:
                await ws.recv()
                counts["storm_connections"] += 1
        except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError):
            counts["storm_failed"] += 1

    tasks = set()
    n = 0
    while time.monotonic() < deadline:
        n += 1
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def _hoarder(url: str, deadline: float, counts: Counter[str], limit: int = 1000) -> None:
    """Connections from one address, opened one after the other until the server refuses one
    (1013), even past the deadline on a slow machine, then held until the deadline."""
    held: list[Any] = []
    try:
        while len(held) < limit:
            try:
                ws = await open_ws(url, 10, "203.0.113.66")
                frame = json.loads(await ws.recv())
            except ConnectionClosed as closed:
                counts[f"hoarder_refused:{closed.rcvd.code if closed.rcvd else 'abnormal'}"] += 1
                break
            except (OSError, InvalidHandshake, TimeoutError):
                counts["hoarder_failed"] += 1
                break
            held.append(ws)
            counts["hoarder_held"] += frame.get("type") == "hello"
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        for ws in held:
            await ws.close()


async def _complete_flood(base: str, deadline: float, loops: int, counts: Counter[str]) -> None:
    """``loops`` concurrent GET /complete loops from one address, as fast as answered."""
    import httpx

    async def loop(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                response = await http.get("/complete", params={"prefix": "flood"})
                counts[f"complete:{response.status_code}"] += 1
            except httpx.HTTPError:
                counts["complete:failed"] += 1
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=base, timeout=10, headers={"X-Forwarded-For": "203.0.113.99"},
                                 trust_env=False) as http:
        await asyncio.gather(*(loop(http) for _ in range(loops)))


async def _abuse(url: str, cfg: SoakConfig, deadline: float, http: bool, counts: Counter[str]) -> None:
    """The WebSocket abusers, or (``http``) the /complete flooder, which gets a process of its
    own so that its busy loops do not slow the flooders down to under the rate limit; until
    ``deadline`` (``time.monotonic()``), and until their connections are closed."""
    if http:
        base = "http" + url[2:].rsplit("/ws", 1)[0]
        await _complete_flood(base, deadline, cfg.complete_flooders, counts)
        return
    await asyncio.gather(
        *(_abuser(url, deadline, cfg.flood_rate, counts, False, i) for i in range(cfg.flooders)),
        *(_abuser(url, deadline, cfg.garbage_rate, counts, True, 100 + i) for i in range(cfg.garbage_senders)),
        *([_storm(url, deadline, cfg.storm_rate, counts)] if cfg.storm_rate > 0 else []),
        *([_hoarder(url, deadline, counts)] if cfg.hoarder else []),
    )


async def _abuse_windows(url: str, cfg: SoakConfig, windows: Sequence[tuple[float, float]],
                         http: bool) -> tuple[dict[str, int], list[float]]:
    """Abuse within each window (``time.monotonic()`` start and end): what the abusers saw, and
    when each window's abuse was over (every connection closed)."""
    counts: Counter[str] = Counter()
    over = []
    for start, end in windows:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        await _abuse(url, cfg, end, http, counts)
        over.append(time.monotonic())
    return dict(sorted(counts.items())), over


def _abuse_process(url: str, cfg: SoakConfig, inbox: Any, out: Any, ready: Any, http: bool = False) -> None:
    """An abusers' process: says ready, takes its windows from ``inbox``, puts its report in ``out``."""
    if cfg.abuser_nice:
        os.nice(cfg.abuser_nice)
    if cfg.abuser_idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if http:
        import httpx  # noqa: F401 (imported before saying ready: a new interpreter's imports take seconds)
    ready.set()
    out.put(eventloop.run(_abuse_windows(url, cfg, inbox.get(), http)))


# -- the run ------------------------------------------------------------------------------


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read() or b"{}")}


def _by_label(metrics_text: str, counter: str) -> dict[str, float]:
    """A counter of the server's ``/metrics`` with one label, by that label's value."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{counter}_total{{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def _metrics(base: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base}/metrics", timeout=30) as response:
        return str(response.read().decode())


def schedule(cfg: SoakConfig, start: float) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The quiet and the abused windows from ``start``: quiet, abused, quiet, ..., quiet."""
    quiet, abused = cfg.quiet_seconds / (cfg.rounds + 1), cfg.abuse_seconds / cfg.rounds
    quiets, abuses = [], []
    t = start
    for _ in range(cfg.rounds):
        quiets.append((t, t + quiet))
        abuses.append((t + quiet, t + quiet + abused))
        t += quiet + abused
    quiets.append((t, t + quiet))
    return quiets, abuses


async def _typists_and_abusers(url: str, base: str, cfg: SoakConfig, scripts: Sequence[Script]) -> dict[str, Any]:
    """The typists for the whole run, the abusers in their windows, a reload half-way through
    the abuse; the windows as they came out (each quiet one starting once the abuse before it
    was over)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    kinds = [False, True] if cfg.complete_flooders else [False]  # http: the /complete flooder's process
    inboxes = [ctx.Queue() for _ in kinds]
    ready = [ctx.Event() for _ in kinds]
    abusers = [ctx.Process(target=_abuse_process, args=(url, cfg, inbox, out, event, http), daemon=True)
               for inbox, event, http in zip(inboxes, ready, kinds)]
    for process in abusers:
        process.start()
    # The typists start once the abusers' processes are there: a new interpreter and its
    # imports take the two cores for seconds, which is this machine's load, not the server's.
    for event in ready:
        if not await asyncio.to_thread(event.wait, 60):
            raise RuntimeError("an abuser process did not start")
    duration = cfg.quiet_seconds + cfg.abuse_seconds
    ramp = min(RAMP, duration / 4)  # as measure() takes it
    quiets, abuses = schedule(cfg, time.monotonic() + ramp)
    for inbox in inboxes:
        inbox.put(abuses)

    async def reload_midway() -> dict[str, Any]:
        if not cfg.reload:
            return {}
        start, end = abuses[cfg.rounds // 2]
        await asyncio.sleep(max(0.0, (start + end) / 2 - time.monotonic()))
        # Absolute: the server reads a relative path under its models root, not our directory.
        body = json.dumps({"index": str(Path(cfg.reload_index or cfg.index).resolve())}).encode()
        return await asyncio.to_thread(_http, f"{base}/admin/reload", body,
                                       {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    typists, reloaded = await asyncio.gather(
        measure(url, scripts, users=cfg.users, duration=duration, ramp=ramp, addresses=True), reload_midway()
    )
    abused: Counter[str] = Counter()
    over = [start for start, _ in abuses]
    for _ in abusers:
        counts, ends = await asyncio.to_thread(out.get, True, 60)
        abused.update(counts)
        over = [max(a, b) for a, b in zip(over, ends)]
    for process in abusers:
        process.join(30)
    # A quiet window after an abused one starts once every abuser has closed everything.
    quiets = [quiets[0]] + [(min(max(start, done + SETTLE), end), end) for (start, end), done in zip(quiets[1:], over)]
    return {"typists": typists, "quiets": quiets, "abuses": abuses, "abusers": dict(sorted(abused.items())),
            "reload": reloaded}


def run_soak(cfg: SoakConfig, say: Any = print) -> dict[str, Any]:
    """Run the soak; its report (``ok`` says whether the typists' p99 stayed within 2x of quiet)."""
    if cfg.rounds < 1 or cfg.quiet_seconds <= 0 or cfg.abuse_seconds <= 0:
        raise ValueError("a soak needs at least one round, and quiet and abused time")
    scripts = chain_pairs(scripts_from_pairs(cfg.pairs, cfg.pairs_limit))
    env = {"QAC_ADMIN_TOKEN": TOKEN}
    with tempfile.TemporaryDirectory(prefix="qac-soak-") as work, \
            ServerProcess(cfg.index, Path(work) / "serve.log", workers=cfg.workers, env=env,
                          sessions=cfg.sessions) as server:
        base = f"http://127.0.0.1:{server.port}"
        memory_start = server.memory()
        say(f"soak: {cfg.users} typists for {cfg.quiet_seconds + cfg.abuse_seconds:g} s; {cfg.rounds} abused "
            f"windows of {cfg.abuse_seconds / cfg.rounds:g} s between quiet ones of "
            f"{cfg.quiet_seconds / (cfg.rounds + 1):g} s: {cfg.flooders} flooders, {cfg.garbage_senders} garbage "
            f"senders, a reconnect storm of {cfg.storm_rate:g}/s, a connection hoarder, {cfg.complete_flooders} "
            "/complete flooders, a reload half-way")
        run = eventloop.run(_typists_and_abusers(server.url, base, cfg, scripts))
        memory_end = server.memory()
        metrics = _metrics(base)
        health = _http(f"{base}/healthz")
    typists: LoadStats = run["typists"]
    zero = run["quiets"][0][0]
    windows = sorted([("quiet", w) for w in run["quiets"]] + [("abuse", w) for w in run["abuses"]],
                     key=lambda kind_window: kind_window[1][0])
    quiet, abused = typists.during(run["quiets"]), typists.during(run["abuses"])
    whole = typists.report()
    quiet_p99, abuse_p99 = quiet["p99_ms"], abused["p99_ms"]
    server_quiet, server_abuse = quiet["server_p99_ms"], abused["server_p99_ms"]
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()},
        "quiet": quiet,
        "abuse": {"typists": abused, "abusers": run["abusers"], "reload": run["reload"]},
        "windows": [{"kind": kind, "from_s": round(start - zero, 2), "to_s": round(end - zero, 2),
                     **typists.during([(start, end)])} for kind, (start, end) in windows],
        "typists": whole,
        "closed_by_server": _by_label(metrics, "qac_closed_connections"),
        "errors_by_server": _by_label(metrics, "qac_protocol_errors"),
        "memory_start": memory_start,
        "memory_end": memory_end,
        "health_after": health,
        "p99_ratio": round(abuse_p99 / quiet_p99, 2) if quiet_p99 and abuse_p99 else None,
        # The same for the server's own time (frame read to answer ready, the frames' took_ms).
        "server_p99_ratio": round(server_abuse / server_quiet, 2) if server_quiet and server_abuse else None,
        # Errors anywhere in the run count, in a window or between (the ramp, a settling).
        "ok": bool(quiet_p99 and abuse_p99 and abuse_p99 <= 2 * quiet_p99
                   and whole["errors"] == 0 and "error" not in run["reload"]),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as the lines BENCHMARKS.md records."""
    rows = [(f"{w['kind']}, {w['from_s']:g}-{w['to_s']:g} s", w) for w in report["windows"]]
    rows += [("quiet, pooled", report["quiet"]), ("abuse, pooled", report["abuse"]["typists"])]
    whole = report["typists"]
    lines = [
        "| window | typists | keystrokes answered | answered/s | p50 ms | p99 ms | server p99 ms | typist errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {name} | {r['users']} | {r['answered']:,} | {r['answered_per_s']:,.0f} | {r['p50_ms']} | "
          f"{r['p99_ms']} | {r['server_p99_ms']} | {r['errors']} |" for name, r in rows),
        "",
        f"- p99 under abuse / quiet: {report['p99_ratio']} ({'within' if report['ok'] else 'NOT within'} 2x)",
        f"- the server's own p99 (frame read to answer ready) under abuse / quiet: {report['server_p99_ratio']}",
        f"- typists over the whole run: {whole['answered']:,} keystrokes answered, {whole['superseded']:,} "
        f"superseded, {whole['unanswered']} unanswered, errors {whole['errors_by_kind'] or 0}",
        f"- abusers' niceness: {report['config']['abuser_nice']}"
        f"{', SCHED_IDLE' if report['config']['abuser_idle'] else ''}",
        f"- abusers saw: {report['abuse']['abusers']}",
        f"- server closed or refused: {report['closed_by_server']}",
        f"- server's error frames: {report['errors_by_server']}",
        f"- reload half-way: {report['abuse']['reload']}",
        f"- server memory (RSS, all processes): {report['memory_start'].get('rss_mb')} MB at start, "
        f"{report['memory_end'].get('rss_mb')} MB at the end",
    ]
    return "\n".join(lines)
