"""The ranking of the same keystrokes, inside ``qac serve`` and in process: where they differ (issue 31).

    python -m scripts.ranking_gap --index models/aol --pairs data/aol-top1000/dev.pairs.jsonl \\
        [--users 100] [--duration 15] [--rounds 2] [--orders served,sessions,served:sleep=1] \\
        [--young 0,7000] [--pin] [--threads N] [--keep DIR]

Each round serves the model with one worker (rate limits lifted; ``qac serve`` run in this
process's tree with a hook on :func:`server.completer.rank_keystroke`) under ``--users``
human-paced typists (``replay.loadgen``, as ``scripts/typists.py``). The hook logs every ranking
of a keystroke with session queries or a personal history (a fresh session's keystroke on a
prefix not ranked ahead is ranked by another path, not logged; the typists send none: each types
after a query it submitted): the call (prefix, session queries, whether a personal history, a
blocklist union and ``context`` were given, the connection), its CPU time by the clock the
server charges (``CPU_CLOCK``, what ``qac_ranking_cpu_seconds_total`` sums), the garbage
collector's CPU time inside it, and the thread's time since the ranking before: on the CPU
running the rest of the server (``loop_cpu``) and off it (``off_cpu``). Once the load is gone,
the server makes the same calls again, back to back (``server, again``) and with a 1 ms sleep
between them, and reports its garbage collector's work from the first keystroke on. Then fresh
processes make exactly those calls (same function and arguments, a model loaded by
``load_warm``, the fresh answers ranked as a one-worker server does), timed the same way,
twice, in each of ``--orders``:

- ``served``: in the order the server ranked them (the sessions interleaved);
- ``sessions``: one connection after the other, each in its own order (as
  ``scripts/keystroke_cost.py`` ranks);
- ``served:sleep=MS``, ``served:spin=MS``, ``served:touch=KB``, ``served:sock=N``: the thread
  sleeps, spins, reads other memory, or sends and reads a frame over a socket pair N times
  between two calls.

Prints one JSON line per run: microseconds of CPU per ranked keystroke (mean; the garbage
collector's part and its collections by generation; by ``loop_cpu`` and ``off_cpu`` bucket), for
the server its CPU (``/proc``) per ranked keystroke, and per keystroke the misses of the model's
memories (values ``remember`` stored; the lru caches' misses and hits). Server vs ``served`` (the same calls in
the same order): what serving adds to a ranking; ``served`` vs ``sessions``: what interleaving
the sessions costs the model's memories. ``--young``: serve with these generation-0 thresholds
(0: the default); ``--pin``: also serve with the server on one core, the typists on the others;
``--threads``: rank on that many threads (``QAC_RANK_THREADS``).
The servers and the replays alternate, so that what else the machine runs spreads over all.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

TraceRow = dict[str, Any]
FRAME = b"x" * 300  # what served:sock=N sends and receives N times between two rankings: an answer's size


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        return _serve(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 1 and sys.argv[1] == "_replay":
        return _replay(sys.argv[2], sys.argv[3], sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="dev pairs (JSON lines)")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2000, help="pairs to draw sessions from")
    ap.add_argument("--young", default="0", help="the servers' generation-0 thresholds, comma-separated (0: "
                    "the default); the replays rank the first one's keystrokes")
    ap.add_argument("--pin", action="store_true", help="also serve with the server on one core and the typists on "
                    "the others (alternated with unpinned)")
    ap.add_argument("--threads", type=int, default=0, help="the server's ranking threads (default 0: on the loop)")
    ap.add_argument("--keep", help="directory to keep the traces in")
    ap.add_argument("--orders", default="served,sessions",
                    help="replays, comma-separated: served, sessions, served:sleep=MS (the thread sleeps MS ms "
                    "between keystrokes), served:spin=MS (it spins as long), served:touch=KB (it reads KB kB of "
                    "other memory), served:sock=N (N trips of a 300-byte frame over a socket pair)")
    args = ap.parse_args()
    from replay.loadgen import chain_pairs
    from replay.scripts import scripts_from_pairs

    scripts = chain_pairs(scripts_from_pairs(args.pairs, args.limit))
    index = str(Path(args.index).resolve())
    with tempfile.TemporaryDirectory(prefix="ranking-gap-") as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        for round_ in range(args.rounds):
            pins = (False, True) if args.pin else (False,)
            servers = [(young, pin) for young in args.young.split(",") for pin in pins]
            for young, pin in servers if round_ % 2 == 0 else servers[::-1]:
                trace = where / f"trace{round_}-{young}{'-pinned' * pin}.jsonl"
                served = _serve_under_load(index, trace, scripts, args.users, args.duration,
                                           where / f"server{round_}-{young}.log", young, pin, args.threads)
                which = {"young": young, "pinned": pin, "round": round_}
                print(json.dumps({"run": "server", **which, **served}), flush=True)
                for name, again in json.loads(Path(f"{trace}.again.json").read_text()).items():
                    print(json.dumps({"run": f"server, {name}", **which, **again}), flush=True)
            trace = where / f"trace{round_}-{servers[0][0]}.jsonl"
            orders = [order for order in args.orders.split(",") if order]
            for order in orders if round_ % 2 == 0 else orders[::-1]:
                out = subprocess.run([sys.executable, "-m", "scripts.ranking_gap", "_replay", index, str(trace), order],
                                     check=True, capture_output=True, text=True)
                print(json.dumps({"run": order, "round": round_, **json.loads(out.stdout)}), flush=True)
    return 0


def _serve_under_load(index: str, trace: Path, scripts: Any, users: int, duration: float,
                      log_path: Path, young: str = "0", pin: bool = False, threads: int = 0) -> dict[str, Any]:
    """Serve ``index`` traced under ``users`` typists; the trace's summary and the load's report."""
    from replay.bench import UNLIMITED, ServerProcess
    from replay.capacity import cpu_seconds
    from replay.loadgen import run_load

    env = UNLIMITED | {"QAC_RANK_THREADS": str(threads)}
    if young != "0":
        env["RANKING_GAP_YOUNG"] = young
    if pin:  # the server on the last core, the typists on the others
        env["RANKING_GAP_CPU"] = str(max(os.sched_getaffinity(0)))
    cores = os.sched_getaffinity(0)
    launcher = [sys.executable, "-m", "scripts.ranking_gap", "_serve", str(trace)]
    try:
        # Told to stop, the server ranks the calls again before it exits (``_serve``).
        with ServerProcess(Path(index), log_path, env=env, launcher=launcher, stop_timeout=600) as server:
            assert server.proc is not None
            if pin:
                os.sched_setaffinity(0, cores - {max(cores)})
            cpu_before = cpu_seconds(server.proc.pid)
            report = run_load(server.url, scripts, users=users, duration=duration)
            cpu = cpu_seconds(server.proc.pid) - cpu_before
    finally:
        os.sched_setaffinity(0, cores)
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    return {**_summary(rows), "server_cpu_s": round(cpu, 2),
            "server_us_per_ranked": round(cpu / max(1, len(rows)) * 1e6, 1),
            "answered_by_client": report["answered"], "p99_ms": report["p99_ms"],
            "errors": report["errors"]}


class _GcClock:
    """The CPU time the garbage collector takes while :attr:`on`, and its collections by generation."""

    def __init__(self) -> None:
        self.on = False
        self.cpu = 0.0
        self.collections = [0, 0, 0]
        self.total = 0.0  # whether on or not
        self.total_collections = [0, 0, 0]
        self.by_generation = [0.0, 0.0, 0.0]
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
            return
        took = time.thread_time() - self._start
        self.total += took
        self.total_collections[info["generation"]] += 1
        self.by_generation[info["generation"]] += took
        if self.on:
            self.cpu += took
            self.collections[info["generation"]] += 1

    def timed(self, timed: Callable[[Any], tuple[Any, float]], call: Any) -> tuple[tuple[Any, float], float, list[int]]:
        """``timed(call)``, the garbage collector's CPU seconds and collections within it."""
        self.cpu, self.collections, self.on = 0.0, [0, 0, 0], True
        try:
            out = timed(call)
        finally:
            self.on = False
        return out, self.cpu, self.collections


class _Memos:
    """Misses of the model's memories: values :func:`indexer.topk.remember` stores (by module),
    and the misses of the corrector's and candidate generator's lru caches."""

    MODULES = ("indexer.topk", "indexer.tfidf", "indexer.wordmodel")

    def __init__(self) -> None:
        import importlib

        self.stored = dict.fromkeys(self.MODULES, 0)
        self._base: dict[str, int] = {}
        for name in self.MODULES:
            module = importlib.import_module(name)
            module.remember = self._counting(name, module.remember)  # type: ignore[attr-defined]

    def _counting(self, name: str, remember: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.stored[name] += 1
            return remember(*args, **kwargs)
        return counted

    @staticmethod
    def _caches(model: Any) -> dict[str, Any]:
        from indexer import candidates

        generator = model.generator
        corrector = generator.corrector
        return {"start_ranges": generator._start_ranges, "query_words": candidates._query_words,
                "correct": corrector.correct, "partials": corrector.partials, "spans": corrector.spans,
                "pairs": corrector.pairs}

    def now(self, model: Any) -> dict[str, int]:
        """Misses so far, by memory."""
        return {**{f"remember {k.rpartition('.')[2]}": v for k, v in self.stored.items()},
                **{f"lru {k} misses": c.cache_info().misses for k, c in self._caches(model).items()},
                **{f"lru {k} hits": c.cache_info().hits for k, c in self._caches(model).items()}}

    def start(self, model: Any) -> None:
        self._base = self.now(model)

    def since(self, model: Any, keystrokes: int) -> dict[str, float]:
        """Per keystroke, since :meth:`start`."""
        return {k: round((v - self._base.get(k, 0)) / max(1, keystrokes), 2) for k, v in self.now(model).items()}


def _row(args: tuple[Any, ...], cpu: float, gc_cpu: float, collections: list[int], conn: int) -> TraceRow:
    """What a traced ``rank_keystroke(*args)`` was: enough to make it again."""
    _, prefix, session, personal, _, blocklist, _, context = args
    return {"prefix": prefix, "session": list(session), "personal": personal is not None,
            "blocklist": blocklist is not None, "context": context, "conn": conn, "cpu": cpu, "gc_cpu": gc_cpu,
            "gc": collections}


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()`` and the CPU seconds it took, by the clock the server charges a ranking with."""
    from server.completer import CPU_CLOCK

    start = CPU_CLOCK()
    out = call()
    return out, CPU_CLOCK() - start


def _serve(trace: str, argv: list[str]) -> int:
    """``qac serve`` (one worker) with every ranking logged to ``trace`` at exit."""
    import server.completer as completer
    from qac.main import main as qac_main

    rows: list[TraceRow] = []
    calls: list[functools.partial[Any]] = []
    conns: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
    clock = _GcClock()
    memos = _Memos()
    untraced = completer.rank_keystroke
    last = [time.perf_counter(), time.thread_time()]

    def traced(*args: Any) -> Any:
        if not rows:  # the garbage collector's and memories' work from the first keystroke on
            clock.total, clock.total_collections, clock.by_generation = 0.0, [0, 0, 0], [0.0, 0.0, 0.0]
            memos.start(args[0])
        loop_cpu = time.thread_time() - last[1]
        off_cpu = (time.perf_counter() - last[0]) - loop_cpu
        call = functools.partial(untraced, *args)
        (out, cpu), gc_cpu, collections = clock.timed(_timed, call)
        try:
            task = asyncio.current_task()
        except RuntimeError:  # a ranking thread
            task = None
        conn = conns.setdefault(task, len(conns)) if task is not None else -1
        rows.append(_row(args, cpu, gc_cpu, collections, conn) | {"off_cpu": off_cpu, "loop_cpu": loop_cpu})
        calls.append(call)
        last[:] = time.perf_counter(), time.thread_time()
        return out

    def dump() -> None:
        collected = {"gc_s": round(clock.total, 3), "collections": clock.total_collections,
                     "gc_s_by_generation": [round(t, 3) for t in clock.by_generation],
                     "threshold": gc.get_threshold()}
        missed = memos.since(calls[0].args[0], len(calls)) if calls else {}
        with open(trace, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
        # The same calls again in this process, the load gone: back to back, then a sleep between.
        again = {f"again{':' + between if between else ''}": _summary(_rank_pass(rows, calls, clock, between))
                 for between in ("", "sleep=1")} | {"gc, from the first keystroke": collected,
                                                       "memories' misses per keystroke": missed}
        Path(trace + ".again.json").write_text(json.dumps(again))

    atexit.register(dump)
    if os.environ.get("RANKING_GAP_CPU"):  # the server on this core alone
        os.sched_setaffinity(0, {int(os.environ["RANKING_GAP_CPU"])})
    if os.environ.get("RANKING_GAP_YOUNG"):  # load_warm keeps it
        gc.set_threshold(int(os.environ["RANKING_GAP_YOUNG"]), *gc.get_threshold()[1:])
    # uvicorn raises the SIGTERM it caught again once shut down: the default action would skip atexit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    completer.rank_keystroke = traced  # type: ignore[assignment]
    return qac_main(argv)


def _replay(index: str, trace: str, order: str) -> int:
    """Rank the calls of ``trace`` as the server did (same functions, arguments, timing), in ``order``."""
    import server.completer as completer
    from server.completer import FreshAnswers, load_warm

    rows = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    order, _, between = order.partition(":")
    if any(row["personal"] or row["blocklist"] for row in rows):
        raise SystemExit("the trace holds personal histories or blocklists: not replayed")
    if order == "sessions":
        rows.sort(key=lambda row: row["conn"])  # stable: each connection in its own order
    model = load_warm(index)
    k = 10
    memos = _Memos()
    fresh = FreshAnswers.ranked(model, None, k)  # as a one-worker server's Completer does
    memos.start(model)
    calls = [functools.partial(completer.rank_keystroke, model, row["prefix"], tuple(row["session"]), None, k, None,
                               fresh, row["context"]) for row in rows]
    clock = _GcClock()
    first = _rank_pass(rows, calls, clock, between)
    missed = memos.since(model, len(calls))
    second = _rank_pass(rows, calls, clock, between)
    print(json.dumps(_summary(first) | {"memories' misses per keystroke": missed, "second_pass": _summary(second)}))
    return 0


def _rank_pass(rows: list[TraceRow], calls: list[functools.partial[Any]], clock: _GcClock,
               between: str = "") -> list[TraceRow]:
    """Make ``calls`` again, timed as the server times them; ``rows`` with their new times.
    ``between``: what the thread does between two (sleep=MS, spin=MS, touch=KB; nothing)."""
    import numpy as np


    what, _, amount = between.partition("=")
    sleep = float(amount) / 1000 if what == "sleep" else 0.0
    spin = float(amount) / 1000 if what == "spin" else 0.0
    other = np.zeros(int(amount) * 128 if what == "touch" else 0)  # float64: 128 per kB
    trips = int(amount) if what == "sock" else 0
    ends = socket.socketpair() if trips else None
    out = []
    for row, call in zip(rows, calls):
        if sleep:
            time.sleep(sleep)
        if spin:
            until = time.perf_counter() + spin
            while time.perf_counter() < until:
                pass
        if other.size:
            other.sum()
        for _ in range(trips):
            ends[0].send(FRAME)
            ends[1].recv(4096)
        (_, cpu), gc_cpu, collections = clock.timed(_timed, call)
        out.append(row | {"cpu": cpu, "gc_cpu": gc_cpu, "gc": collections})
    if ends:
        for end in ends:
            end.close()
    return out
    print(json.dumps(_summary(out)))
    return 0


BUCKETS = (0.0001, 0.001, 0.005)  # seconds, of the thread's time between two rankings


def _summary(rows: list[TraceRow]) -> dict[str, Any]:
    n = max(1, len(rows))
    by: dict[str, dict[str, list[float]]] = {"off_cpu": {}, "loop_cpu": {}}
    for row in rows:
        for key, buckets in by.items():
            upper = next((b for b in BUCKETS if row[key] < b), None)
            buckets.setdefault(f"<{upper * 1000:g}ms" if upper else f">={BUCKETS[-1] * 1000:g}ms", []).append(
                row["cpu"])
    return {"ranked": len(rows), "us_per_ranked": round(sum(r["cpu"] for r in rows) / n * 1e6, 1),
            "gc_us_per_ranked": round(sum(r["gc_cpu"] for r in rows) / n * 1e6, 1),
            "collections": [sum(r["gc"][g] for r in rows) for g in range(3)],
            "with_context": sum(bool(r["context"]) for r in rows),
            "with_session": sum(bool(r["session"]) for r in rows),
            # By how long the server's ranking thread was off the CPU before it, and ran the rest of the
            # server (the loop_cpu) since the ranking before: keystrokes, us each.
            **{f"by_{key}": {k: [len(v), round(sum(v) / len(v) * 1e6, 1)] for k, v in sorted(buckets.items())}
               for key, buckets in by.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
