"""``qac bench``: build, serve and load-test a model; write figures and charts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replay.bench import BenchConfig

from .args import CommandError, csv, list_of, positive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``qac`` subcommands."""
    d: Any = BenchConfig(logs=(), pairs=Path())
    p = sub.add_parser(
        "bench",
        help="build, serve and load-test a model; write bench.json, charts and a Markdown summary",
        description="Build the model and most-popular completion (the baseline) from LOG, measure build "
        "time, peak memory and size; serve each with `qac serve` on a free port; measure accuracy and "
        "single-request latency by replaying PAIRS, then concurrent human-paced load and one saturation "
        "run; then the capacity of 1 and 2 workers (the most human-paced typists served with p99 <= 50 ms), "
        "the headline; then the same costs on growing slices of a plain query list. Writes DIR/bench.json, "
        "DIR/bench.md and PNG charts, and prints the Markdown summary.",
    )
    arg = p.add_argument
    arg("--log", dest="logs", action="append", type=Path, required=True, metavar="TRAIN",
        help="the training log; repeatable")
    arg("--pairs", type=Path, required=True, metavar="PAIRS.jsonl", help="evaluation pairs, also the load's script")
    arg("--out", type=Path, default=d.out, metavar="DIR", help="where results and models go (default: %(default)s)")
    arg("--pairs-limit", type=positive(int), default=d.pairs_limit, metavar="N",
        help="pairs replayed for accuracy and single-request latency (default: %(default)s)")
    arg("--concurrency-levels", type=list_of(int), default=d.concurrency_levels, metavar="N,N,...",
        help=f"human-paced sessions at once, one load run each (default: {csv(d.concurrency_levels)})")
    arg("--duration", type=positive(float), default=d.duration, metavar="SECONDS",
        help="measured seconds of each load run (default: %(default)s)")
    arg("--saturation-users", type=positive(int), default=d.saturation_users, metavar="N",
        help="sessions of the saturation run (default: %(default)s)")
    arg("--scale-log", type=Path, default=d.scale_log, metavar="PATH",
        help="plain query list (one query per line) whose slices make the scaling table; needed "
        "unless --skip-scale")
    arg("--scale-fractions", type=list_of(float), default=d.scale_fractions, metavar="F,F,...",
        help=f"fractions of --scale-log to build from (default: {csv(d.scale_fractions)})")
    arg("--scale-pairs-limit", type=positive(int), default=d.scale_pairs_limit, metavar="N",
        help="pairs replayed for the latency of each scaled model (default: %(default)s)")
    arg("--capacity-workers", type=list_of(int), default=d.capacity_workers, metavar="N,N,...",
        help="worker counts whose capacity is searched: the most human-paced typists served with p99 <= 50 ms "
        f"and no error (default: {csv(d.capacity_workers)})")
    arg("--capacity-start", type=positive(int), default=d.capacity_start, metavar="N",
        help="typists of the capacity search's first step; doubled until a step fails, then bisected "
        "(default: %(default)s)")
    arg("--capacity-limit", type=positive(int), default=d.capacity_limit, metavar="N",
        help="most typists the capacity search tries (default: %(default)s)")
    arg("--capacity-duration", type=positive(float), default=d.capacity_duration, metavar="SECONDS",
        help="measured seconds of each step of the capacity search (default: %(default)s)")
    arg("--capacity-sessions", default=d.capacity_sessions, metavar="redis://HOST:PORT/DB",
        help="session store of the capacity runs with more than one worker (default: a throwaway "
        "redis-server)")
    arg("--build-args", default="", metavar="'ARGS'",
        help="extra `qac build` flags for every build, e.g. --build-args='--workers 2'")
    arg("--server-workers", type=positive(int), default=d.server_workers, metavar="N",
        help="`qac serve --workers` (default: %(default)s)")
    for part, what in (("baseline", "most-popular completion"), ("load", "the concurrent load runs"),
                       ("saturation", "the saturation run"),
                       ("capacity", "the capacity search"), ("scale", "the scaling table")):
        arg(f"--skip-{part}", action="store_true", help=f"leave out {what}")
    arg("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac bench``: run the benchmark and print its Markdown summary."""
    import importlib.util
    import shlex

    from replay.bench import run_bench

    if importlib.util.find_spec("matplotlib") is None:  # said now, not after the minutes of work before the charts
        raise CommandError("qac bench draws its charts with matplotlib, which is not installed: "
                           "pip install -e '.[bench]'")

    config = BenchConfig(
        logs=tuple(args.logs), pairs=args.pairs, out=args.out, pairs_limit=args.pairs_limit,
        concurrency_levels=args.concurrency_levels, duration=args.duration,
        saturation_users=args.saturation_users, scale_log=args.scale_log,
        scale_fractions=args.scale_fractions, scale_pairs_limit=args.scale_pairs_limit,
        build_args=tuple(shlex.split(args.build_args)), server_workers=args.server_workers,
        baseline=not args.skip_baseline, load=not args.skip_load, saturation=not args.skip_saturation,
        scale=not args.skip_scale, capacity=not args.skip_capacity,
        capacity_workers=args.capacity_workers, capacity_start=args.capacity_start,
        capacity_limit=args.capacity_limit, capacity_duration=args.capacity_duration,
        capacity_sessions=args.capacity_sessions, quiet=args.quiet,
    )
    summary = run_bench(config)
    print(summary)
    return 0
