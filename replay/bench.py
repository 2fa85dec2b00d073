"""``qac bench``: build, serve and load-test the model and its baseline; record what each costs.

Every model is built by a ``qac build`` subprocess (wall time, and peak resident memory from
``wait4``) and served by a ``qac serve`` subprocess on a free port, with the per-connection
rate limit lifted (``QAC_RATE``, ``QAC_BURST``) so the saturation run measures the ranking,
not the limiter. The clients run in this process.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexer.errors import QacError

from .capacity import P99_BUDGET_MS, CapacityConfig, cpu_seconds, find_capacity, ranking_cost

# The baseline goes through the same build, server and client: a model whose only candidates
# are the most popular completions, ranked by the fixed scorer (popularity first).
SYSTEMS: dict[str, tuple[str, ...]] = {"model": (), "mpc": ("--sources", "mpc", "--default-scorer")}
UNLIMITED = {"QAC_RATE": "1000000", "QAC_BURST": "1000000", "QAC_ADDRESS_RATE": "1000000",
             "QAC_ADDRESS_BURST": "1000000", "QAC_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
             "QAC_SUBMIT_RATE": "1000000", "QAC_SUBMIT_BURST": "1000000",
             "QAC_ADDRESS_SUBMIT_RATE": "1000000", "QAC_ADDRESS_SUBMIT_BURST": "1000000",
             "QAC_ADDRESS_CPU_RATE": "1000000", "QAC_ADDRESS_CPU_BURST": "1000000"}


class BenchError(QacError):
    """A benchmark that cannot run: bad inputs, a build or server that fails."""


@dataclass(frozen=True)
class BenchConfig:
    """What ``qac bench`` measures; the one source of its defaults."""

    logs: tuple[Path, ...]
    pairs: Path
    out: Path = Path("bench")
    pairs_limit: int = 2000
    concurrency_levels: tuple[int, ...] = (1, 50, 100, 200, 500)
    duration: float = 20.0
    saturation_users: int = 50
    scale_log: Path | None = None
    scale_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    scale_pairs_limit: int = 500
    capacity_workers: tuple[int, ...] = (1, 2)
    capacity_start: int = 50
    capacity_limit: int = 1600
    capacity_duration: float = 8.0
    capacity_sessions: str | None = None  # a redis:// store for more than one worker; None: a throwaway one
    build_args: tuple[str, ...] = ()
    server_workers: int = 1
    baseline: bool = True
    load: bool = True
    saturation: bool = True
    scale: bool = True
    capacity: bool = True
    quiet: bool = False

    def check(self) -> None:
        """Raise :class:`BenchError` naming the first input that cannot be used."""
        if self.scale and self.scale_log is None:
            raise BenchError("the scaling table needs a plain query list: give --scale-log PATH or --skip-scale")
        for path in (*self.logs, self.pairs, *((self.scale_log,) if self.scale and self.scale_log else ())):
            if not Path(path).is_file():
                raise BenchError(f"file not found: {path}")
        if not self.logs:
            raise BenchError("no training log given")
        if self.capacity:
            try:
                self.capacity_search().check()
            except ValueError as exc:
                raise BenchError(str(exc)) from None
        if any(not 0 < f <= 1 for f in self.scale_fractions):
            raise BenchError(f"scale fractions must be in (0, 1], got {self.scale_fractions}")

    def capacity_search(self) -> CapacityConfig:
        """The bounds of the capacity search."""
        return CapacityConfig(start=self.capacity_start, limit=self.capacity_limit, duration=self.capacity_duration)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def dir_size_mb(path: Path) -> float:
    """Bytes of every file under ``path``, in MB."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 2)


def build_measured(logs: Sequence[Path], out: Path, args: Sequence[str], log_path: Path) -> dict[str, Any]:
    """Run ``qac build`` into ``out``: wall seconds, peak RSS, size, counts.

    The peak is ``wait4``'s: the largest resident set of the build process or any of its
    workers, not their sum (forked workers share most pages).
    """
    cmd = [sys.executable, "-m", "qac", "build", "--out", str(out), "--quiet", *args]
    for log in logs:
        cmd += ["--log", str(log)]
    with log_path.open("w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(f"qac build exited with {proc.returncode} (log {log_path}): {_tail(log_path)}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest.get("counts", {})
    return {
        "seconds": round(seconds, 2),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "reported_peak_mb": counts.get("peak_memory_mb"),  # the build's own: main process, then largest worker
        "reported_worker_peak_mb": counts.get("worker_peak_memory_mb"),
        "size_mb": dir_size_mb(out),
        "rows": counts.get("rows_read"),
        "labels": counts.get("labels"),
        "version": manifest.get("version"),
        "stages": counts.get("seconds"),
    }


def rss_mb(pid: int) -> dict[str, float]:
    """Current and peak resident memory of a process and its children (Linux /proc)."""
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    out = {"rss_mb": 0.0, "peak_rss_mb": 0.0}
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] += int(value.split()[0]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


class ServerProcess:
    """``qac serve`` in a subprocess on a free port, for the length of a ``with`` block."""

    def __init__(self, index: Path, log_path: Path, *, workers: int = 1, timeout: float = 600.0,
                 env: dict[str, str] | None = None, sessions: str = "memory", cwd: Path | None = None,
                 launcher: Sequence[str] = (sys.executable, "-m", "qac"), stop_timeout: float = 20.0):
        """``env``: the environment of the server over this process's without its ``QAC_*``
        (default: no rate limit, for benchmarks); ``sessions``: its store (more than one worker
        needs a ``redis://`` one); ``cwd``: its working directory (``python -m`` puts it first on
        the path: a code tree to serve); ``launcher``: the command ``serve`` and its flags follow
        (a script may wrap ``qac``'s); ``stop_timeout``: seconds it may take to exit once told to."""
        self.index, self.log_path, self.workers, self.timeout = index, log_path, workers, timeout
        self.sessions, self.cwd, self.launcher, self.stop_timeout = sessions, cwd, list(launcher), stop_timeout
        self.env = UNLIMITED if env is None else env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> ServerProcess:
        self.port = free_port()
        cmd = [*self.launcher, "serve", "--index", str(self.index), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers), "--sessions", self.sessions]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QAC_")} | self.env
        with self.log_path.open("w") as sink:
            self.proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"qac serve exited with {self.proc.returncode} (log {self.log_path}): "
                                 f"{_tail(self.log_path)}")
            try:
                with opener.open(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise BenchError(f"qac serve did not answer /healthz within {self.timeout:.0f} s")
            time.sleep(0.2)

    def memory(self) -> dict[str, float]:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def slice_queries(path: Path, fraction: float, out: Path) -> int:
    """Write the first ``fraction`` of a plain query list to ``out``; how many lines it has."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
        lines = f.readlines()
    body = lines[1:] if lines and lines[0].strip() == "Query" else lines
    keep = body[: max(1, round(len(body) * fraction))]
    out.write_text("Query\n" + "".join(keep), encoding="utf-8")
    return len(keep)


def _single(url: str, scripts: Sequence[Any]) -> dict[str, Any]:
    from .replay import ReplayOptions, run_replay

    return run_replay(url, scripts, ReplayOptions(concurrency=1, timeout=60.0))


def _serve_and_measure(name: str, index: Path, cfg: BenchConfig, scripts: Sequence[Any],
                       say: Callable[[str], None]) -> dict[str, Any]:
    from .loadgen import chain_pairs, run_load

    sessions = chain_pairs(scripts)
    out: dict[str, Any] = {}
    with ServerProcess(index, cfg.out / f"serve-{name}.log", workers=cfg.server_workers) as server:
        out["memory_idle"] = server.memory()
        say(f"{name}: replaying {len(scripts):,} pairs one keystroke at a time")
        out["single"] = _single(server.url, scripts)
        if cfg.load:
            out["load"] = []
            for users in cfg.concurrency_levels:
                say(f"{name}: {users} human-paced sessions for {cfg.duration:g} s")
                out["load"].append(run_load(server.url, sessions, users=users, duration=cfg.duration))
        if cfg.saturation:
            say(f"{name}: saturation, {cfg.saturation_users} sessions without pauses for {cfg.duration:g} s")
            out["saturation"] = run_load(server.url, sessions, users=cfg.saturation_users,
                                         duration=cfg.duration, pause=None)
        out["memory"] = server.memory()
    return out


class RedisProcess:
    """A throwaway ``redis-server`` on a free port, for a server of more than one worker."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> RedisProcess:
        exe = shutil.which("redis-server")
        if exe is None:
            raise BenchError("more than one worker needs a shared session store: install redis-server "
                             "or give --capacity-sessions redis://HOST:PORT/DB")
        port = free_port()
        self.proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise BenchError("redis-server did not start")
            time.sleep(0.1)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _capacity(cfg: BenchConfig, index: Path, scripts: Sequence[Any], say: Callable[[str], None]) -> dict[str, Any]:
    """The most human-paced typists each worker count serves, and what an answer costs the
    server beside what ranking it costs in process."""
    import contextlib

    import indexer

    from .loadgen import chain_pairs

    sessions = chain_pairs(scripts)
    search = cfg.capacity_search()
    out: dict[str, Any] = {"ranking": ranking_cost(indexer.load(index), sessions), "workers": {}}
    say(f"capacity: in-process ranking {out['ranking']['cpu_ms_per_keystroke']:.3f} ms of CPU per keystroke")
    with contextlib.ExitStack() as stack:
        store = "memory"
        for workers in cfg.capacity_workers:
            if workers > 1 and store == "memory":
                store = cfg.capacity_sessions or stack.enter_context(RedisProcess()).url
            log = cfg.out / f"serve-capacity-{workers}.log"
            with ServerProcess(index, log, workers=workers, sessions=store if workers > 1 else "memory") as server:
                found = _search_capacity(server, sessions, search, functools.partial(_said, say, workers))
            say(f"capacity, {workers} worker(s): {found['typists']} typists")
            out["workers"][str(workers)] = found
    return out


def _said(say: Callable[[str], None], workers: int, text: str) -> None:
    say(f"capacity, {workers} worker(s): {text}")


def _search_capacity(server: ServerProcess, sessions: Sequence[Any], search: CapacityConfig,
                     say: Callable[[str], None]) -> dict[str, Any]:
    from .loadgen import run_load

    assert server.proc is not None
    pid = server.proc.pid

    def run(users: int) -> dict[str, Any]:
        say(f"{users} human-paced typists for {search.duration:g} s")
        return run_load(server.url, sessions, users=users, duration=search.duration)

    return find_capacity(run, search, lambda: cpu_seconds(pid))


def _scale(cfg: BenchConfig, scripts: Sequence[Any], work: Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    assert cfg.scale_log is not None  # BenchConfig.check refuses a scaling run without one
    for fraction in cfg.scale_fractions:
        tag = f"{fraction:.0%}"
        queries = work / f"queries-{fraction:g}.txt"
        n = slice_queries(cfg.scale_log, fraction, queries)
        model = work / f"model-{fraction:g}"
        say(f"scale {tag}: building from {n:,} queries")
        # A plain query list has no users to count: it can only be built with --min-users 1.
        built = build_measured([queries], model, (*cfg.build_args, "--min-users", "1"),
                               cfg.out / f"build-scale-{fraction:g}.log")
        with ServerProcess(model, cfg.out / f"serve-scale-{fraction:g}.log", workers=cfg.server_workers) as server:
            say(f"scale {tag}: replaying {len(scripts):,} pairs")
            single = _single(server.url, scripts)
            memory = server.memory()
        shutil.rmtree(model, ignore_errors=True)
        queries.unlink()
        rows.append({
            "fraction": fraction, "queries": n, "labels": built["labels"], "build_s": built["seconds"],
            "peak_mb": built["peak_mb"], "size_mb": built["size_mb"], "serve_rss_mb": memory["rss_mb"],
            "p50_ms": single["p50_ms"], "p95_ms": single["p95_ms"], "p99_ms": single["p99_ms"],
            "keystrokes": single["keystrokes"], "errors": single["errors"],
        })
    return rows


def run_bench(cfg: BenchConfig) -> str:
    """Run every part ``cfg`` asks for; writes ``bench.json``, ``bench.md`` and charts into
    ``cfg.out`` and returns the Markdown summary. Raises :class:`BenchError`."""
    import indexer
    from indexer.evaluate import PairsError, evaluate, read_pairs

    from .charts import latency_chart, scale_chart
    from .scripts import scripts_from_pairs

    cfg.check()

    def say(text: str) -> None:
        if not cfg.quiet:
            print(f"qac bench: {text}", file=sys.stderr, flush=True)

    cfg.out.mkdir(parents=True, exist_ok=True)
    try:
        pairs = read_pairs(cfg.pairs, cfg.pairs_limit)
        scripts = scripts_from_pairs(cfg.pairs, cfg.pairs_limit)
    except PairsError as exc:
        raise BenchError(str(exc)) from exc
    started = time.time()
    result: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k == "logs" else v)
                   for k, v in asdict(cfg).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "systems": {},
    }
    for name, args in SYSTEMS.items():
        if name != "model" and not cfg.baseline:
            continue
        index = cfg.out / "models" / name
        say(f"{name}: building from {', '.join(map(str, cfg.logs))}")
        system: dict[str, Any] = {"build": build_measured(cfg.logs, index, (*cfg.build_args, *args),
                                                          cfg.out / f"build-{name}.log")}
        if name == "model":
            say(f"model: qac eval on {len(pairs):,} pairs (in process)")
            offline = evaluate(indexer.load(index), pairs)
            system["eval"] = offline["model"]
            mpc_eval = offline["mpc"]
        else:
            system["eval"] = mpc_eval
        system.update(_serve_and_measure(name, index, cfg, scripts, say))
        system["replay_agrees_with_eval"] = system["single"]["sampled_mrr"] == system["eval"]["mrr"]
        result["systems"][name] = system
    if cfg.capacity:
        result["capacity"] = _capacity(cfg, cfg.out / "models" / "model", scripts, say)
    if cfg.scale:
        with tempfile.TemporaryDirectory(prefix=".scale-", dir=cfg.out) as work:
            result["scale"] = _scale(cfg, scripts_from_pairs(cfg.pairs, cfg.scale_pairs_limit), Path(work), say)
    charts = []
    loads = {n: s["load"] for n, s in result["systems"].items() if s.get("load")}
    if loads:
        charts.append(latency_chart(loads, cfg.out / "latency_vs_concurrency.png").name)
    if result.get("scale"):
        charts.append(scale_chart(result["scale"], cfg.out / "scaling.png").name)
    result["charts"] = charts
    result["seconds"] = round(time.time() - started, 1)
    (cfg.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    summary = markdown(result)
    (cfg.out / "bench.md").write_text(summary + "\n", encoding="utf-8")
    say(f"wrote {cfg.out / 'bench.json'}, {cfg.out / 'bench.md'}" + "".join(f", {cfg.out / c}" for c in charts))
    return summary


def _f(value: Any, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


_LOAD_HEADER = (
    "| system | sessions | keystrokes/s | answered/s | p50 ms | p95 ms | p99 ms | server p50 ms "
    "| superseded | unanswered | errors |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
)


def markdown(result: dict[str, Any]) -> str:
    """The Markdown tables of a bench result, ready to paste into BENCHMARKS.md."""
    cfg, systems = result["config"], result["systems"]
    m = result["machine"]
    out = [f"Measured {result['started'][:10]} on {m['cpus']} CPUs, Python {m['python']}; "
           f"`qac bench --log {' '.join(cfg['logs'])} --pairs {cfg['pairs']}` ({cfg['pairs_limit']:,} pairs), "
           f"server and clients on the same machine.", "",
           *_capacity_table(result.get("capacity")),
           "| system | build s | peak build MB | model MB | labels | server RSS MB | MRR@10 (eval) "
           "| MRR@10 (replay) | success@10 | keystrokes saved | p50 ms | p95 ms | p99 ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in systems.items():
        b, single = s["build"], s["single"]
        success = single["sampled"]["success@10"] if single["sampled"] else None
        out.append(f"| {name} | {_f(b['seconds'])} | {_f(b['peak_mb'], ',.0f')} | {_f(b['size_mb'])} "
                   f"| {_f(b['labels'], ',')} | {_f(s['memory']['rss_mb'], ',.0f')} | {_f(s['eval']['mrr'], '.4f')} "
                   f"| {_f(single['sampled_mrr'], '.4f')} | {_f(success, '.4f')} "
                   f"| {_f(single['keystrokes_saved'], '.1%')} | {_f(single['p50_ms'], '.2f')} "
                   f"| {_f(single['p95_ms'], '.2f')} | {_f(single['p99_ms'], '.2f')} |")
    if any(s.get("load") for s in systems.values()):
        out += ["", f"Concurrent human-paced sessions (a keystroke every 150-250 ms each, {cfg['duration']:g} s "
                "measured after a ramp-up); latency is the client's round trip.", "",
                *_LOAD_HEADER]
        for name, s in systems.items():
            for r in s.get("load", []):
                out.append(_load_row(name, r))
    if any(s.get("saturation") for s in systems.values()):
        out += ["", f"Saturation: {cfg['saturation_users']} sessions typing with no pause, each waiting only "
                "for the answer to a query's last keystroke.", "",
                *_LOAD_HEADER]
        for name, s in systems.items():
            if s.get("saturation"):
                out.append(_load_row(name, s["saturation"]))
    if result.get("scale"):
        out += ["", f"Scaling: the model built from the first part of `{Path(cfg['scale_log']).name}`; "
                f"latency replaying {cfg['scale_pairs_limit']:,} pairs one keystroke at a time.", "",
                "| share | queries | labels | build s | peak build MB | model MB | server RSS MB | p50 ms | p99 ms |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["scale"]:
            out.append(f"| {r['fraction']:.0%} | {r['queries']:,} | {_f(r['labels'], ',')} | {_f(r['build_s'])} "
                       f"| {_f(r['peak_mb'], ',.0f')} | {_f(r['size_mb'])} | {_f(r['serve_rss_mb'], ',.0f')} "
                       f"| {_f(r['p50_ms'], '.2f')} | {_f(r['p99_ms'], '.2f')} |")
    return "\n".join(out)


def _capacity_table(capacity: dict[str, Any] | None) -> list[str]:
    """The headline: the most human-paced typists served, and what an answer costs the server."""
    if not capacity:
        return []
    ranking = capacity["ranking"]["cpu_ms_per_keystroke"]
    budget = next(iter(capacity["workers"].values()))["p99_budget_ms"] if capacity["workers"] else P99_BUDGET_MS
    out = [f"Capacity: the most human-paced typists (a keystroke every 150-250 ms each, sessions replayed from "
           f"the pairs) served with p99 <= {budget:g} ms and no error, load generator on the same machine; "
           f"server CPU (its processes' user + system time) per answered keystroke at that load, beside "
           f"the in-process ranking CPU of the same keystrokes ({ranking:.3f} ms).", "",
           "| workers | typists served | p99 ms | server CPU ms / answer | x ranking |",
           "|---:|---:|---:|---:|---:|"]
    for workers, found in capacity["workers"].items():
        cpu = found["server_cpu_ms_per_answer"]
        ratio = cpu / ranking if cpu is not None and ranking else None
        more = "+" if found["limit_reached"] else ""
        out.append(f"| {workers} | {found['typists']:,}{more} | {_f(found['p99_ms'], '.2f')} | {_f(cpu, '.3f')} "
                   f"| {_f(ratio, '.2f')} |")
    return [*out, ""]


def _load_row(name: str, r: dict[str, Any]) -> str:
    return (f"| {name} | {r['users']:,} | {_f(r['sent_per_s'])} | {_f(r['answered_per_s'])} | {_f(r['p50_ms'], '.2f')} "
            f"| {_f(r['p95_ms'], '.2f')} | {_f(r['p99_ms'], '.2f')} | {_f(r['server_p50_ms'], '.2f')} "
            f"| {r['superseded']:,} | {r['unanswered']:,} | {r['errors']:,} |")
