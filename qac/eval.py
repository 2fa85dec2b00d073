"""``qac eval``: a model against most-popular completion on evaluation pairs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .args import CommandError, add_columns_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``qac`` subcommands."""
    p = sub.add_parser(
        "eval",
        help="measure a model against most-popular completion on evaluation pairs",
        description="Score a model and most-popular completion (from the same label counts) on "
        "JSON-lines pairs {prev_query, prefix, next_query, user, time} (as `qac pairs` writes them; the time in "
        "any format a log may have): MRR@10, success@1/10, BLEU, "
        "latency; with --personal-log, each user's own history and the leak rate too.",
    )
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="model directory")
    p.add_argument("--pairs", required=True, type=Path, metavar="PAIRS.jsonl", help="evaluation pairs")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N pairs")
    p.add_argument("--personal-log", action="append", type=Path, default=[], metavar="LOG",
                   help="a query log with users and times (as `qac build` reads it) whose queries, with those of "
                   "the user's earlier pairs, make each pair's personal history (only what is dated before the pair); "
                   "also counts leaks: shown logged queries that fewer than 3 users of LOG typed, not "
                   "the user's own and not the prefix itself; repeatable")
    add_columns_flag(p)
    p.add_argument("--dump", type=Path, metavar="FILE",
                   help="write one JSON line per pair: its fields and the items each system showed")
    p.add_argument("--typos", action="store_true",
                   help="score only the pairs whose normalized prefix has 5+ characters, twice: as typed, "
                   "and with one synthetic keyboard slip after the first character (a QWERTY neighbour "
                   "substituted, the character dropped, a neighbour inserted or the character doubled, or "
                   "two adjacent characters swapped); prints both, side by side by prefix length")
    p.add_argument("--seed", type=int, default=0, help="random seed of --typos (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _written_whole(path: Path | None) -> Iterator[IO[str] | None]:
    """A file that appears at ``path`` only once it is complete."""
    if path is None:
        yield None
        return
    path = path.expanduser()
    if path.is_dir():
        raise CommandError(f"--dump {path} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CommandError(f"cannot write --dump {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def run(args: argparse.Namespace) -> int:
    """``qac eval``: score the model and most-popular completion on the pairs."""
    from tqdm import tqdm

    from indexer import load
    from indexer.evaluate import (
        evaluate,
        format_report,
        format_typo_report,
        pair_histories,
        read_pairs,
        typo_pairs,
    )
    from indexer.train.logs import LogStats, read_logs

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    model = load(args.index)
    pairs = read_pairs(args.pairs, args.limit)
    personal = leak_users = None
    if args.personal_log:
        rows, _ = read_logs(args.personal_log, LogStats(), columns=args.columns)
        if not any(p.user is not None and p.time is not None for p in pairs):
            raise CommandError(f"--personal-log needs pairs with 'user' and 'time'; {args.pairs} has none")
        personal = pair_histories(pairs, ((r.user, r.time, r.query) for r in rows))
        leak_users = Counter(q for q, _ in {(r.query, r.user) for r in rows})
        del rows
    if args.typos:
        kept, typed = typo_pairs(pairs, args.seed)
        if not kept:
            raise CommandError(f"--typos: no pair of {args.pairs} has a prefix of 5+ characters")
        clean = [pairs[i] for i in kept]
        mine = None if personal is None else [personal[i] for i in kept]
        results = {}
        with _written_whole(args.dump) as dump:
            for name, subset in (("clean", clean), ("typo", typed)):
                with tqdm(total=len(subset), desc=f"eval {name}", unit="pair", disable=args.quiet or None,
                          leave=False) as bar:
                    results[name] = evaluate(model, subset, progress=bar.update, personal=mine,
                                             leak_users=leak_users, dump=dump,
                                             group_prefixes=[p.prefix for p in clean])
        for name, r in results.items():
            print(f"== {name} prefixes ==")
            print(format_report(r))
        print(format_typo_report(results["clean"], results["typo"]))
        if args.json:
            print(json.dumps({"seed": args.seed, **results}))
        return 0
    with _written_whole(args.dump) as dump, \
            tqdm(total=len(pairs), desc="eval", unit="pair", disable=args.quiet or None, leave=False) as bar:
        result = evaluate(model, pairs, progress=bar.update, personal=personal, leak_users=leak_users, dump=dump)
    print(format_report(result))
    if args.json:
        print(json.dumps(result))
    return 0
