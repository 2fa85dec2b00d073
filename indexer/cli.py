"""``qac``: build, evaluate and query completion models from the command line.

The CLI only parses flags and calls library functions; library errors become a one-line
message and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .logs import REPAIRS, LogError
from .params import SOURCES, WEIGHTINGS, BuildParams
from .storage import ModelError

SAMPLE_LOG = Path(__file__).resolve().parent.parent / "data" / "sample.tsv.gz"
EXIT_USAGE = 2

_DEFAULTS = BuildParams()


class CommandError(Exception):
    """An error the CLI reports in one line and exits 2 for."""


def _build_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a completion model from query logs",
        description="Read AOL-format query logs (or plain one-query-per-line files), cut them "
        "into sessions and write a model directory atomically.",
    )
    arg = p.add_argument
    arg("--log", action="append", type=Path, metavar="PATH",
        help=f"a query log, .tsv or .gz; repeatable (default: the shipped sample {SAMPLE_LOG.name})")
    arg("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    arg("--trie-depth", type=int, default=_DEFAULTS.trie_depth,
        help="characters of the label trie above the clusters; 0 = pure clustering (default: %(default)s)")
    arg("--max-leaf", type=int, default=_DEFAULTS.max_leaf, help="most labels in a tree leaf (default: %(default)s)")
    arg("--beam", type=int, default=_DEFAULTS.beam, help="beam width of the tree search (default: %(default)s)")
    arg("--workers", type=int, default=_DEFAULTS.workers,
        help="processes featurizing and training the rankers; also how finely that work is split "
        "into tasks (default: %(default)s)")
    arg("--dask", metavar="ADDRESS",
        help="run featurizing and ranker training as tasks on a Dask cluster instead of local "
        "processes: tcp://HOST:PORT of a running scheduler (its workers need qac installed), or "
        "local[:N] for a LocalCluster of N worker processes on this machine (default N: --workers). "
        "Needs pip install 'qac[dask]'. The model is the same either way")
    arg("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default: %(default)s)")
    arg("--weighting", choices=WEIGHTINGS, default=_DEFAULTS.weighting,
        help="position weighting of prefix n-grams: none, by offset in the string or in the word "
        "(default: %(default)s)")
    arg("--prev-weight", type=float, default=_DEFAULTS.prev_weight,
        help="weight of the previous-query block of the features; 0 ignores it (default: %(default)s)")
    arg("--sources", default=",".join(_DEFAULTS.sources),
        help=f"comma-separated candidate sources, of {','.join(SOURCES)} (default: all)")
    arg("--no-reranker", action="store_true",
        help="rank with a fixed popularity-first scorer instead of a learned one")
    arg("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build
    from .executors import ExecutorError, open_executor

    try:
        params = BuildParams(
            trie_depth=args.trie_depth, max_leaf=args.max_leaf, beam=args.beam, workers=args.workers,
            seed=args.seed, weighting=args.weighting, prev_weight=args.prev_weight,
            sources=tuple(s for s in args.sources.split(",") if s), reranker=not args.no_reranker,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    logs = args.log or [SAMPLE_LOG]
    try:
        with open_executor(args.dask, params.workers) as executor:
            summary = build(logs, args.out, params, quiet=args.quiet, executor=executor)
    except ExecutorError as exc:
        raise CommandError(str(exc)) from exc
    skipped = {why: n for why, n in summary.skipped.items() if why not in REPAIRS}
    repaired = {why: n for why, n in summary.skipped.items() if why in REPAIRS}
    print(f"built {args.out}")
    print(f"  rows read       {summary.rows_read:,} ({sum(skipped.values()):,} skipped)")
    print(f"  sessions        {summary.sessions:,}")
    print(f"  examples        {summary.examples:,} (reranker: {summary.rerank_examples:,}, "
          f"target among candidates {summary.rerank_recall:.1%})")
    print(f"  labels          {summary.labels:,}")
    print(f"  tree            depth {summary.tree_depth}, {summary.tree_leaves:,} leaves, "
          f"{summary.nonzero_weights:,} nonzero weights")
    print("  seconds         " + ", ".join(f"{k} {v:.1f}" for k, v in summary.seconds.items()))
    if args.dask:
        print(f"  peak memory     {summary.peak_memory_mb:,.0f} MB (this process; Dask workers not counted)")
    else:
        print(f"  peak memory     {summary.peak_memory_mb:,.0f} MB (largest worker process "
              f"{summary.worker_peak_memory_mb:,.0f} MB, sharing most of it)")
    print(f"  skipped         {_by_reason(skipped) or 'none'}")
    if repaired:
        print(f"  repaired        {_by_reason(repaired)}")
    return 0


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While building, SIGTERM exits with 143 through ``finally`` blocks (so the unfinished
    model directory is removed) instead of killing the process on the spot."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    owner = os.getpid()

    def exit_(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked worker: die as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure a model against most-popular completion on evaluation pairs",
        description="Score a model and most-popular completion (from the same label counts) on "
        "JSON-lines pairs {prev_query, prefix, next_query}: MRR@10, success@1/10, BLEU, latency.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="model directory")
    p.add_argument("--pairs", required=True, type=Path, metavar="PAIRS.jsonl", help="evaluation pairs")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N pairs")
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import load
    from .evaluate import PairsError, evaluate, format_report, read_pairs

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    model = load(args.index)
    try:
        pairs = read_pairs(args.pairs, args.limit)
    except PairsError as exc:
        raise CommandError(str(exc)) from exc
    with tqdm(total=len(pairs), desc="eval", unit="pair", disable=args.quiet, leave=False) as bar:
        result = evaluate(model, pairs, progress=bar.update)
    print(format_report(result))
    if args.json:
        print(json.dumps(result))
    return 0


def _complete_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("complete", help="print the completions of a prefix",
                       description="Print a model's ten completions of PREFIX, optionally after earlier queries.")
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="model directory")
    p.add_argument("prefix", help="the text typed so far")
    p.add_argument("--prev", action="append", default=[], metavar="QUERY",
                   help="an earlier query of the session; repeat, oldest first")
    p.add_argument("-k", type=int, default=10, help="how many completions (default: %(default)s)")
    p.set_defaults(func=_cmd_complete)


def _cmd_complete(args: argparse.Namespace) -> int:
    from . import load

    for c in load(args.index).complete(args.prefix, args.prev, k=args.k):
        print(f"{c.score:8.3f}  {c.query}")
    return 0


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    # Imported here: server.cli imports CommandError from this module.
    from server.cli import add_serve_parser

    add_serve_parser(sub)


def _replay_parser(sub: argparse._SubParsersAction) -> None:
    # Imported here: server.bench_cli imports CommandError from this module.
    from server.bench_cli import add_replay_parser

    add_replay_parser(sub)


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    from server.bench_cli import add_bench_parser

    add_bench_parser(sub)


_PARSERS: Sequence[Callable[[argparse._SubParsersAction], None]] = (
    _build_parser, _eval_parser, _complete_parser, _serve_parser, _replay_parser, _bench_parser,
)


def make_parser() -> argparse.ArgumentParser:
    """The ``qac`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="qac", description="Session-aware query autocompletion: build, evaluate, serve."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qac``; returns the exit code."""
    args = make_parser().parse_args(argv)
    try:
        with _sigterm_exits() if args.func is _cmd_build else contextlib.nullcontext():
            return int(args.func(args))
    except (CommandError, LogError, ModelError) as exc:
        print(f"qac {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
