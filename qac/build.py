"""``qac build``: read query logs and write a model directory."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from indexer.blocklist import Blocklist
from indexer.params import SOURCES, WEIGHTINGS, BuildParams
from indexer.train.logs import REPAIRS
from indexer.train.sample import SAMPLE_LOG

from .args import CommandError, add_columns_flag

_DEFAULTS = BuildParams()


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``build`` to the ``qac`` subcommands."""
    p = sub.add_parser(
        "build",
        help="build a completion model from query logs",
        description="Read query logs (TSV, CSV or JSON lines with user, query and time, found by "
        "the header; or one query per line), cut them into sessions and write a model directory "
        "atomically.",
    )
    arg = p.add_argument
    arg("--log", action="append", type=Path, metavar="PATH",
        help="a query log: TSV, CSV or JSON lines, plain or gzipped, or one query per line; repeatable "
        f"(default: the shipped sample {SAMPLE_LOG.name})")
    add_columns_flag(p)
    arg("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    arg("--trie-depth", type=int, default=_DEFAULTS.trie_depth,
        help="characters of the label trie above the clusters; 0 = pure clustering (default: %(default)s)")
    arg("--max-leaf", type=int, default=_DEFAULTS.max_leaf, help="most labels in a tree leaf (default: %(default)s)")
    arg("--beam", type=int, default=_DEFAULTS.beam, help="beam width of the tree search (default: %(default)s)")
    arg("--workers", type=int, default=_DEFAULTS.workers,
        help="processes featurizing, training the rankers and ranking the scorer's training "
        "keystrokes; also how finely that work is split into tasks (default: %(default)s)")
    arg("--dask", metavar="ADDRESS",
        help="run featurizing, ranker training and the scorer's keystrokes as tasks on a Dask cluster "
        "instead of local processes: tcp://HOST:PORT of a running scheduler (its workers need qac installed), or "
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
    arg("--min-users", type=int, default=_DEFAULTS.min_users, metavar="K",
        help="suggest to anyone only the queries, words, bigrams and transitions that at least K "
        "distinct users typed; a log without users (one query per line) needs --min-users 1 "
        "(default: %(default)s)")
    arg("--blocklist", action="append", type=Path, default=[], metavar="FILE",
        help="terms or phrases never to suggest, one per line, matched on whole words; repeatable; "
        "added to the shipped default list")
    arg("--sensitive", action="append", type=Path, default=[], metavar="FILE",
        help="terms or phrases shown only when the typed prefix holds the whole term, never as a "
        "completion of a shorter prefix, one per line; repeatable; added to the shipped default list")
    arg("--no-default-blocklist", action="store_true",
        help="do not use the shipped default lists (blocked: adult, hateful and violent terms; sensitive: "
        "sexual, drug, violence and self-harm terms)")
    arg("--typo-share", type=float, default=_DEFAULTS.typo_share, metavar="SHARE",
        help="share of the scorer's keystrokes of 5+ characters copied with a synthetic typo, so "
        "that it learns to rank corrected candidates; 0 trains on clean keystrokes only (default: %(default)s)")
    arg("--default-scorer", "--no-reranker", dest="default_scorer", action="store_true",
        help="rank with the fixed popularity-first weights instead of fitting the scorer "
        "(--no-reranker: its old name, kept for a release)")
    arg("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac build``: build the model and print its summary."""
    from indexer.train.build import build
    from indexer.train.executors import open_executor

    try:
        params = BuildParams(
            trie_depth=args.trie_depth, max_leaf=args.max_leaf, beam=args.beam, workers=args.workers,
            seed=args.seed, weighting=args.weighting, prev_weight=args.prev_weight,
            sources=tuple(s for s in args.sources.split(",") if s), fit_scorer=not args.default_scorer,
            min_users=args.min_users, default_blocklist=not args.no_default_blocklist,
            typo_share=args.typo_share,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    logs = args.log or [SAMPLE_LOG]
    blocklist = Blocklist.from_files(args.blocklist, default=params.default_blocklist, sensitive=args.sensitive)
    with sigterm_exits(), open_executor(args.dask, params.workers) as executor:
        summary = build(logs, args.out, params, quiet=args.quiet, executor=executor, blocklist=blocklist,
                        columns=args.columns)
    skipped = {why: n for why, n in summary.skipped.items() if why not in REPAIRS}
    repaired = {why: n for why, n in summary.skipped.items() if why in REPAIRS}
    print(f"built {args.out}")
    print(f"  rows read       {summary.rows_read:,} ({sum(skipped.values()):,} skipped)")
    print(f"  sessions        {summary.sessions:,}")
    print(f"  examples        {summary.examples:,} (scorer: {summary.scorer_examples:,}, "
          f"target among candidates {summary.scorer_recall:.1%})")
    print(f"  labels          {summary.labels:,} of {summary.distinct_queries:,} distinct queries "
          f"(typed by at least {params.min_users} {'people' if params.min_users > 1 else 'person'}, "
          f"none of {summary.blocklist_terms:,} blocked terms)")
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
def sigterm_exits() -> Iterator[None]:
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
