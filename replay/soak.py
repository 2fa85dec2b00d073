"""A soak run: normal typists while others abuse the server, against its own ``qac serve``.

Quiet phases (typists alone) before and after the abuse give the reference latency, pooled:
the machine's speed drifts over minutes, and a reference taken on both sides of the abuse
phase drifts with it. The abuse phase runs the same typists beside a flooder (far above the
rate limit), garbage senders (bad JSON, binary frames, bad ids, control characters, oversized
frames, invalid UTF-8), a reconnect storm, a hoarder that opens connections from one address
until it is refused, a ``GET /complete`` flooder, and a model reload half-way. Every client
claims an address of its own in ``X-Forwarded-For`` (the server trusts 127.0.0.1 as its
proxy), the abusers one each. The report: keystrokes answered, errors by kind on both sides,
the typists' p99 in each phase, and the server's memory before and after.

The abusers run in processes of their own so that their Python does not slow the typists'
measuring loop. Everything shares this machine's cores with the server, but abusers stand for
clients on other machines: by default (``abuser_nice`` 19) their processes take the cores only
when the server and the typists leave them. The server handles the same abuse either way,
within a few percent (errors answered, connections closed and refused, ``/complete`` requests
answered); only the frames a paused flooder pushes into its socket, never read, are fewer.
``abuser_nice=0`` makes the abusers compete with the server's workers for the cores, as on a
single box (BENCHMARKS.md, "Eighth session of 2026-11-29").
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

from .bench import ServerProcess
from .loadgen import LoadStats, chain_pairs, load, measure
from .replay import open_ws
from .scripts import Script, scripts_from_pairs

TOKEN = "soak-admin-token"
RAMP = 2.0  # seconds over which the typists start, before they are measured


@dataclass(frozen=True)
class SoakConfig:
    """What a soak run does; rates are per second."""

    index: Path
    pairs: Path
    reload_index: Path | None = None  # default: reload the same directory
    reload: bool = True
    workers: int = 2
    users: int = 100
    quiet_seconds: float = 30.0
    abuse_seconds: float = 120.0
    flooders: int = 2
    flood_rate: float = 500.0  # messages per second per flooder (the limit is 20)
    garbage_senders: int = 4
    garbage_rate: float = 20.0
    storm_rate: float = 20.0  # connections opened and dropped per second (0: none)
    hoarder: bool = True  # opens connections from one address until refused, holds them
    complete_flooders: int = 8  # concurrent GET /complete loops from one address (0: none)
    abuser_nice: int = 19  # os.nice() of the abusers' processes: > 0 stands for abusers on other machines
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
    rng = random.Random(seed)
    qid = 0
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
                    await asyncio.sleep(1 / rate)
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
    (1013), then held (reading, so that none is cut as a slow client) until the deadline."""
    held: list[Any] = []
    try:
        while len(held) < limit and time.monotonic() < deadline:
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


async def _abuse(url: str, cfg: SoakConfig, seconds: float, http: bool) -> dict[str, int]:
    """The WebSocket abusers, or (``http``) the /complete flooder, which gets a process of its
    own so that its busy loops do not slow the flooders down to under the rate limit."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    if http:
        base = "http" + url[2:].rsplit("/ws", 1)[0]
        await _complete_flood(base, deadline, cfg.complete_flooders, counts)
        return dict(sorted(counts.items()))
    await asyncio.gather(
        *(_abuser(url, deadline, cfg.flood_rate, counts, False, i) for i in range(cfg.flooders)),
        *(_abuser(url, deadline, cfg.garbage_rate, counts, True, 100 + i) for i in range(cfg.garbage_senders)),
        *([_storm(url, deadline, cfg.storm_rate, counts)] if cfg.storm_rate > 0 else []),
        *([_hoarder(url, deadline, counts)] if cfg.hoarder else []),
    )
    return dict(sorted(counts.items()))


def _abuse_process(url: str, cfg: SoakConfig, seconds: float, out: Any, ready: Any, http: bool = False) -> None:
    if cfg.abuser_nice:
        os.nice(cfg.abuser_nice)
    if http:
        import httpx  # noqa: F401 (imported before saying ready: a new interpreter's imports take seconds)
    ready.set()
    out.put(asyncio.run(_abuse(url, cfg, seconds, http)))


# -- the run ------------------------------------------------------------------------------


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read() or b"{}")}


def _closed_by_server(metrics_text: str) -> dict[str, float]:
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("qac_closed_connections_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def _metrics(base: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base}/metrics", timeout=30) as response:
        return str(response.read().decode())


async def _abuse_phase(url: str, base: str, cfg: SoakConfig, scripts: Sequence[Script]) -> dict[str, Any]:
    """Typists measured while the abusers run and a reload happens half-way."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    kinds = [False, True] if cfg.complete_flooders else [False]  # http: the /complete flooder's process
    ready = [ctx.Event() for _ in kinds]
    # The abusers outlast the typists' window (2 s of ramp, then the phase) by a little, so that
    # what they do when they stop (closing every connection, exiting) falls outside it too.
    seconds = RAMP + cfg.abuse_seconds + 3
    abusers = [ctx.Process(target=_abuse_process, args=(url, cfg, seconds, out, event, http), daemon=True)
               for event, http in zip(ready, kinds)]
    for process in abusers:
        process.start()
    # The typists are measured from when the abusers are there: a new interpreter and its
    # imports take the two cores for seconds, which is this machine's load, not the server's.
    for event in ready:
        if not await asyncio.to_thread(event.wait, 60):
            raise RuntimeError("an abuser process did not start")

    async def reload_midway() -> dict[str, Any]:
        if not cfg.reload:
            return {}
        await asyncio.sleep(cfg.abuse_seconds / 2)
        # Absolute: the server reads a relative path under its models root, not our directory.
        body = json.dumps({"index": str(Path(cfg.reload_index or cfg.index).resolve())}).encode()
        return await asyncio.to_thread(_http, f"{base}/admin/reload", body,
                                       {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    typists, reloaded = await asyncio.gather(
        load(url, scripts, users=cfg.users, duration=cfg.abuse_seconds, ramp=RAMP, addresses=True), reload_midway()
    )
    abused: Counter[str] = Counter()
    for _ in abusers:
        abused.update(await asyncio.to_thread(out.get, True, cfg.abuse_seconds + 60))
    for process in abusers:
        process.join(30)
    abused = Counter(dict(sorted(abused.items())))
    return {"typists": typists, "abusers": dict(abused), "reload": reloaded}


def run_soak(cfg: SoakConfig, say: Any = print) -> dict[str, Any]:
    """Run the soak; its report (``ok`` says whether the typists' p99 stayed within 2x of quiet)."""
    scripts = chain_pairs(scripts_from_pairs(cfg.pairs, cfg.pairs_limit))
    env = {"QAC_ADMIN_TOKEN": TOKEN}
    with tempfile.TemporaryDirectory(prefix="qac-soak-") as work, \
            ServerProcess(cfg.index, Path(work) / "serve.log", workers=cfg.workers, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        memory_start = server.memory()
        def quiet_phase(when: str) -> LoadStats:
            say(f"soak: quiet phase {when} the abuse, {cfg.users} typists for {cfg.quiet_seconds:g} s")
            return asyncio.run(measure(server.url, scripts, users=cfg.users, duration=cfg.quiet_seconds,
                                       ramp=RAMP, addresses=True))

        before = quiet_phase("before")
        say(f"soak: abuse phase, {cfg.abuse_seconds:g} s: {cfg.flooders} flooders, {cfg.garbage_senders} "
            f"garbage senders, a reconnect storm of {cfg.storm_rate:g}/s, a connection hoarder, "
            f"{cfg.complete_flooders} /complete flooders, a reload half-way")
        abuse = asyncio.run(_abuse_phase(server.url, base, cfg, scripts))
        after = quiet_phase("after")
        memory_end = server.memory()
        metrics = _metrics(base)
        health = _http(f"{base}/healthz")
    quiet = before.merged(after).report()
    quiet_p99, abuse_p99 = quiet["p99_ms"], abuse["typists"]["p99_ms"]
    server_quiet, server_abuse = quiet["server_p99_ms"], abuse["typists"]["server_p99_ms"]
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()},
        "quiet": quiet,
        "quiet_before": before.report(),
        "quiet_after": after.report(),
        "abuse": abuse,
        "closed_by_server": _closed_by_server(metrics),
        "memory_start": memory_start,
        "memory_end": memory_end,
        "health_after": health,
        "p99_ratio": round(abuse_p99 / quiet_p99, 2) if quiet_p99 and abuse_p99 else None,
        # The same for the server's own time (frame read to answer ready, the frames' took_ms).
        "server_p99_ratio": round(server_abuse / server_quiet, 2) if server_quiet and server_abuse else None,
        "ok": bool(quiet_p99 and abuse_p99 and abuse_p99 <= 2 * quiet_p99
                   and quiet["errors"] == 0 and abuse["typists"]["errors"] == 0 and "error" not in abuse["reload"]),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as the lines BENCHMARKS.md records."""
    phases = [("quiet, before", report["quiet_before"]), ("abuse", report["abuse"]["typists"]),
              ("quiet, after", report["quiet_after"]), ("quiet, both", report["quiet"])]
    lines = [
        "| phase | typists | keystrokes answered | answered/s | p50 ms | p99 ms | typist errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {name} | {r['users']} | {r['answered']:,} | {r['answered_per_s']:,.0f} | {r['p50_ms']} | "
          f"{r['p99_ms']} | {r['errors']} |" for name, r in phases),
        "",
        f"- p99 under abuse / quiet: {report['p99_ratio']} ({'within' if report['ok'] else 'NOT within'} 2x)",
        f"- the server's own p99 (frame read to answer ready) under abuse / quiet: {report['server_p99_ratio']}",
        f"- abusers' niceness: {report['config']['abuser_nice']}",
        f"- abusers saw: {report['abuse']['abusers']}",
        f"- server closed or refused: {report['closed_by_server']}",
        f"- reload half-way: {report['abuse']['reload']}",
        f"- server memory (RSS, all processes): {report['memory_start'].get('rss_mb')} MB at start, "
        f"{report['memory_end'].get('rss_mb')} MB at the end",
    ]
    return "\n".join(lines)
