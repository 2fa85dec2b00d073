"""``qac pairs``: split a log by date and write evaluation pairs by the standard protocol."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import tempfile
from pathlib import Path

from .args import CommandError, add_columns_flag


def _date(text: str) -> float:
    from indexer.times import parse_time

    seconds = parse_time(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"expected a date (YYYY-MM-DD) or a time as logs write it, got {text!r}")
    return seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pairs`` to the ``qac`` subcommands."""
    p = sub.add_parser(
        "pairs",
        help="split a log by date and write evaluation pairs",
        description="Split a query log by date into train, dev and test logs and write the evaluation "
        "pairs of the dev and test logs, by the standard protocol: queries normalized; per user, in time "
        "order, a new session after more than 30 minutes; consecutive duplicates collapsed; every "
        "consecutive pair of queries of a session is one pair, with one prefix length drawn uniformly "
        "from 1..len(next query) by numpy RandomState(SEED), users in the order they first appear in "
        "the log. Each line: {prev_query, prefix, next_query, user, time}. Without dates, the whole log "
        "makes DIR/pairs.jsonl. Files are written whole or not at all.",
    )
    p.add_argument("log", type=Path, metavar="LOG", help="a query log with users and times, as `qac build` reads it")
    add_columns_flag(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write into (made if missing)")
    p.add_argument("--dev-from", type=_date, metavar="DATE",
                   help="rows from DATE (local time, YYYY-MM-DD or a full time) on make the dev log and "
                   "DIR/dev.pairs.jsonl; rows before it, DIR/train.tsv.gz")
    p.add_argument("--test-from", type=_date, metavar="DATE",
                   help="rows from DATE on make the test log and DIR/test.pairs.jsonl (the dev log then "
                   "ends before DATE)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prefix lengths (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac pairs``: read, split, make the pairs, write every file at once."""
    from indexer.train.logs import REPAIRS, read_logs
    from indexer.train.pairs import TRAIN, log_tsv, pairs_jsonl, split_by_date, with_pairs

    out: Path = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is not a directory")
    rows, stats = read_logs([args.log], columns=args.columns)
    local = not stats.zoned_times
    skipped = {why: n for why, n in stats.skipped.items() if why not in REPAIRS}
    read = f"read {args.log}  {stats.rows_read:,} rows"
    if skipped:
        read += f" ({sum(skipped.values()):,} skipped: " + ", ".join(
            f"{n:,} {why}" for why, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))) + ")"
    splits = split_by_date(rows, args.dev_from, args.test_from)
    del rows
    dated = args.dev_from is not None or args.test_from is not None
    files: list[tuple[str, bytes, str]] = []
    for split in splits:
        if dated:
            users = len({r.user for r in split.rows})
            files.append((f"{split.name}.tsv.gz", gzip.compress(log_tsv(split.rows, local), mtime=0),
                          f"{len(split.rows):,} rows of {users:,} users"))
        if split.name != TRAIN:
            made = with_pairs(split, args.seed, local)
            name = f"{split.name}.pairs.jsonl" if dated else "pairs.jsonl"
            files.append((name, pairs_jsonl(made), f"{len(made.pairs):,} pairs from {made.sessions:,} sessions"))
    _write_all(out, [(name, data) for name, data, _ in files])
    print(read)
    width = max(len(str(out / name)) for name, _, _ in files)
    for name, _, what in files:
        print(f"wrote {str(out / name):<{width}}  {what}")
    return 0


def _write_all(out: Path, files: list[tuple[str, bytes]]) -> None:
    """Write every file into ``out`` under a temporary name, then rename them all: on a failure
    no file of ``files`` is half-written, and none is replaced."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    temps: list[tuple[str, Path]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for name, data in files:
            fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            temps.append((tmp, out / name))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), 0o666 & ~umask)  # as open() would make it, not mkstemp's 0o600
        for tmp, final in temps:
            os.replace(tmp, final)
    except OSError as exc:
        raise CommandError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
