"""``qac replay`` and ``qac bench``: parse flags and call :mod:`server.replay` / :mod:`server.bench`.

``indexer.cli`` adds both subcommands with :func:`add_replay_parser` and :func:`add_bench_parser`.
Every default comes from :class:`~server.replay.ReplayOptions` or :class:`~server.bench.BenchConfig`;
matplotlib loads only when ``qac bench`` draws its charts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from indexer.cli import CommandError

T = TypeVar("T")


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _list_of(kind: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    one = _positive(kind)

    def parse(text: str) -> tuple[T, ...]:
        try:
            values = tuple(one(part) for part in text.split(",") if part.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers > 0, got {text!r}") from exc
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _csv(values: tuple[object, ...]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def add_replay_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` to the ``qac`` subcommands."""
    from .replay import ReplayOptions

    d = ReplayOptions()
    p = sub.add_parser(
        "replay",
        help="replay logged sessions against a running server and score its suggestions",
        description="Open one WebSocket per session, type each query keystroke by keystroke (waiting "
        "for every answer), submit it, and report MRR@10 and success@10 over all keystrokes and by "
        "prefix length, MRR at each pair's sampled prefix (as `qac eval` measures it), keystrokes "
        "saved, round-trip latency, errors and dropped connections.",
    )
    p.add_argument("--url", required=True, metavar="ws://HOST:PORT/ws", help="the server's WebSocket")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", action="append", type=Path, metavar="LOG.tsv[.gz]",
                        help="a query log, cut into sessions as `qac build` does; repeatable")
    source.add_argument("--pairs", type=Path, metavar="PAIRS.jsonl",
                        help="evaluation pairs: submit prev_query, then type next_query")
    p.add_argument("--sessions", type=_positive(int), metavar="N", help="replay only the first N sessions")
    p.add_argument("--concurrency", type=_positive(int), default=d.concurrency, metavar="C",
                   help="sessions replayed at once (default: %(default)s)")
    p.add_argument("--rate", type=_positive(float), default=d.rate, metavar="KEYSTROKES_PER_S",
                   help="most keystrokes per second over all sessions (default: as fast as answered)")
    p.add_argument("--timeout", type=_positive(float), default=d.timeout, metavar="SECONDS",
                   help="seconds to wait for one answer before giving up on the session (default: %(default)s)")
    p.add_argument("--duration", type=_positive(float), default=d.duration, metavar="SECONDS",
                   help="start no keystroke after this many seconds (default: replay everything)")
    p.add_argument("--json", action="store_true", help="end with the report as one JSON object on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from indexer.evaluate import PairsError

    from .replay import ReplayError, ReplayOptions, format_report, run_replay
    from .scripts import scripts_from_log, scripts_from_pairs

    try:
        options = ReplayOptions(concurrency=args.concurrency, rate=args.rate, timeout=args.timeout,
                                duration=args.duration)
        if args.pairs is not None:
            scripts = scripts_from_pairs(args.pairs, args.sessions)
        else:
            scripts = scripts_from_log(args.log, args.sessions)
        report = run_replay(args.url, scripts, options, quiet=args.quiet)
    except (ReplayError, PairsError) as exc:
        raise CommandError(str(exc)) from exc
    print(format_report(report))
    if args.json:
        print(json.dumps(report))
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``qac`` subcommands."""
    from .bench import BenchConfig

    d: Any = BenchConfig(logs=(), pairs=Path())
    p = sub.add_parser(
        "bench",
        help="build, serve and load-test a model; write bench.json, charts and a Markdown summary",
        description="Build the model and most-popular completion (the baseline) from LOG, measure build "
        "time, peak memory and size; serve each with `qac serve` on a free port; measure accuracy and "
        "single-request latency by replaying PAIRS, then concurrent human-paced load and one saturation "
        "run; then the same costs on growing slices of a plain query list. Writes DIR/bench.json, "
        "DIR/bench.md and PNG charts, and prints the Markdown summary.",
    )
    arg = p.add_argument
    arg("--log", dest="logs", action="append", type=Path, required=True, metavar="TRAIN",
        help="the training log; repeatable")
    arg("--pairs", type=Path, required=True, metavar="PAIRS.jsonl", help="evaluation pairs, also the load's script")
    arg("--out", type=Path, default=d.out, metavar="DIR", help="where results and models go (default: %(default)s)")
    arg("--pairs-limit", type=_positive(int), default=d.pairs_limit, metavar="N",
        help="pairs replayed for accuracy and single-request latency (default: %(default)s)")
    arg("--concurrency-levels", type=_list_of(int), default=d.concurrency_levels, metavar="N,N,...",
        help=f"human-paced sessions at once, one load run each (default: {_csv(d.concurrency_levels)})")
    arg("--duration", type=_positive(float), default=d.duration, metavar="SECONDS",
        help="measured seconds of each load run (default: %(default)s)")
    arg("--saturation-users", type=_positive(int), default=d.saturation_users, metavar="N",
        help="sessions of the saturation run (default: %(default)s)")
    arg("--scale-log", type=Path, default=d.scale_log, metavar="PATH",
        help="plain query list whose slices make the scaling table (default: %(default)s)")
    arg("--scale-fractions", type=_list_of(float), default=d.scale_fractions, metavar="F,F,...",
        help=f"fractions of --scale-log to build from (default: {_csv(d.scale_fractions)})")
    arg("--scale-pairs-limit", type=_positive(int), default=d.scale_pairs_limit, metavar="N",
        help="pairs replayed for the latency of each scaled model (default: %(default)s)")
    arg("--build-args", default="", metavar="'ARGS'",
        help="extra `qac build` flags for every build, e.g. --build-args='--workers 2'")
    arg("--server-workers", type=_positive(int), default=d.server_workers, metavar="N",
        help="`qac serve --workers` (default: %(default)s)")
    for part, what in (("baseline", "most-popular completion"), ("load", "the concurrent load runs"),
                       ("saturation", "the saturation run"), ("scale", "the scaling table")):
        arg(f"--skip-{part}", action="store_true", help=f"leave out {what}")
    arg("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from .bench import BenchConfig, BenchError, run_bench

    try:
        config = BenchConfig(
            logs=tuple(args.logs), pairs=args.pairs, out=args.out, pairs_limit=args.pairs_limit,
            concurrency_levels=args.concurrency_levels, duration=args.duration,
            saturation_users=args.saturation_users, scale_log=args.scale_log,
            scale_fractions=args.scale_fractions, scale_pairs_limit=args.scale_pairs_limit,
            build_args=tuple(shlex.split(args.build_args)), server_workers=args.server_workers,
            baseline=not args.skip_baseline, load=not args.skip_load, saturation=not args.skip_saturation,
            scale=not args.skip_scale, quiet=args.quiet,
        )
        summary = run_bench(config)
    except BenchError as exc:
        raise CommandError(str(exc)) from exc
    print(summary)
    return 0
