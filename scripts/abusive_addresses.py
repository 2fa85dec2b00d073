"""The server's CPU time per answered typist keystroke, with and without two abusive addresses.

    python -m scripts.abusive_addresses --index /tmp/aol --pairs data/aol-top1000/dev.pairs.jsonl \\
        [--code .] [--users 100] [--seconds 20]

Starts ``qac serve`` from the source tree ``--code`` (so that two trees can be compared in
turn), then runs two windows: human-paced typists alone (``replay.loadgen``, each with an
address of its own), and the same typists while two addresses (driven from a process of their
own), each with 20 connections, send costly crafted keystrokes (200-character prefixes of
misspelled frequent words, ``scripts/adversarial_keystrokes.py``) at their message limit (200 a
second per address), reading the answers as they come. The server's CPU time is read from
/proc before and after each window. Prints one JSON line: per window, the typists' answers and
errors, the abusers' answers and refusals, and the server's CPU milliseconds per answered
typist keystroke; and the ratio abused / quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

import indexer
from replay.capacity import cpu_seconds
from replay.loadgen import chain_pairs, measure
from replay.scripts import scripts_from_pairs
from scripts.adversarial_keystrokes import Crafter

RECIPE = (200, ("typo", "word"), True, "none")


async def abuse(url: str, address: str, prefixes: list[str], until: float, seen: Counter[str]) -> None:
    """20 connections of ``address``, each sending 10 crafted keystrokes a second until ``until``."""

    async def one(n: int) -> None:
        async with connect(url, additional_headers={"X-Forwarded-For": address}, max_queue=None) as ws:
            await ws.recv()

            async def read() -> None:
                async for frame in ws:
                    msg = json.loads(frame)
                    seen[msg.get("code", msg["type"])] += 1

            reader = asyncio.create_task(read())
            qid = 0
            while time.monotonic() < until:
                qid += 1
                prefix = prefixes[(n * 7919 + qid) % len(prefixes)]
                await ws.send(json.dumps({"type": "query", "id": qid, "prefix": prefix}))
                await asyncio.sleep(0.1)
            reader.cancel()

    await asyncio.gather(*(one(n) for n in range(20)), return_exceptions=True)


def abusers(url: str, prefixes: list[str], seconds: float, out: Any) -> None:
    """Both abusive addresses, in a process of their own (so they do not starve the typists' client)."""
    seen: Counter[str] = Counter()

    async def both() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(abuse(url, f"203.0.113.{i}", prefixes, until, seen) for i in (1, 2)))

    asyncio.run(both())
    out.put(dict(seen))


def window(url: str, pid: int, scripts: list, users: int, seconds: float, prefixes: list[str] | None) -> dict:
    before = cpu_seconds(pid)
    seen: dict[str, int] = {}
    if prefixes:
        queue: Any = multiprocessing.Queue()
        process = multiprocessing.Process(target=abusers, args=(url, prefixes, seconds + 1.0, queue))
        process.start()
    report = asyncio.run(measure(url, scripts, users=users, duration=seconds, addresses=True)).report()
    if prefixes:
        seen = queue.get(timeout=60)
        process.join(10)
    cpu = cpu_seconds(pid) - before
    answered = report["answered"]
    return {"typists_answered": answered, "typists_errors": report["errors_by_kind"], "abusers": seen,
            "server_cpu_s": round(cpu, 2), "cpu_ms_per_typist_keystroke": round(1000 * cpu / max(1, answered), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--code", default=str(Path(__file__).resolve().parents[1]), help="source tree to serve")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--server-log", help="file for the server's output (default: discarded)")
    args = ap.parse_args()
    crafter = Crafter(indexer.load(args.index), 0)
    prefixes = [crafter.keystroke(RECIPE)[0] for _ in range(5000)]
    scripts = chain_pairs(scripts_from_pairs(args.pairs, 2000))
    env = {**os.environ, "PYTHONPATH": args.code, "QAC_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    server = subprocess.Popen([sys.executable, "-m", "qac", "serve", "--index", args.index, "--port", str(args.port)],
                              cwd=args.code, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(args.server_log, "wb") if args.server_log else subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{args.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        url = f"ws://127.0.0.1:{args.port}/ws"
        quiet = window(url, server.pid, scripts, args.users, args.seconds, None)
        abused = window(url, server.pid, scripts, args.users, args.seconds, prefixes)
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps({"code": args.code, "quiet": quiet, "abused": abused,
                      "ratio": round(abused["cpu_ms_per_typist_keystroke"] / quiet["cpu_ms_per_typist_keystroke"], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
