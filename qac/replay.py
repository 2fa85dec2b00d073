"""``qac replay``: replay logged sessions against a running server and score what it shows."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from replay.replay import ReplayOptions

from .args import CommandError, add_columns_flag, positive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` to the ``qac`` subcommands."""
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
    source.add_argument("--log", action="append", type=Path, metavar="LOG",
                        help="a query log, read and cut into sessions as `qac build` does (TSV, CSV or JSON "
                        "lines, plain or gzipped, columns found by the header or --columns); repeatable")
    source.add_argument("--pairs", type=Path, metavar="PAIRS.jsonl",
                        help="evaluation pairs: submit prev_query, then type next_query")
    add_columns_flag(p)
    p.add_argument("--as-users", action="store_true",
                   help="replay each session as its user (the log's user id, or the pair's 'user'): present a "
                   "token signed for that id as the embedding site signs a signed-in user, with the server's "
                   "secret from QAC_SECRET, and replay one user's sessions in order, so that their submits build "
                   "the personal history their later sessions see (the server's rate, submit and CPU limits are for "
                   "people: lift them for a replay, as README's \"Seed histories and replay as users\" does)")
    p.add_argument("--sessions", type=positive(int), metavar="N", help="replay only the first N sessions")
    p.add_argument("--concurrency", type=positive(int), default=d.concurrency, metavar="C",
                   help="sessions replayed at once (default: %(default)s)")
    p.add_argument("--rate", type=positive(float), default=d.rate, metavar="KEYSTROKES_PER_S",
                   help="most keystrokes per second over all sessions (default: as fast as answered)")
    p.add_argument("--timeout", type=positive(float), default=d.timeout, metavar="SECONDS",
                   help="seconds to wait for one answer before giving up on the session (default: %(default)s)")
    p.add_argument("--duration", type=positive(float), default=d.duration, metavar="SECONDS",
                   help="start no keystroke after this many seconds (default: replay everything)")
    p.add_argument("--json", action="store_true", help="end with the report as one JSON object on the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac replay``: replay the sessions and print the report."""
    from replay.replay import format_report, run_replay, signable, site_signer
    from replay.scripts import user_scripts_from_log, user_scripts_from_pairs

    options = ReplayOptions(concurrency=args.concurrency, rate=args.rate, timeout=args.timeout,
                            duration=args.duration)
    sign = None
    if args.as_users:
        secret = os.environ.get("QAC_SECRET", "")
        if not secret:
            raise CommandError("--as-users signs user tokens with the server's secret: set QAC_SECRET to it (the "
                               "server's QAC_SECRET, or the content of its --secret-file)")
        sign = site_signer(secret)
    if args.pairs is not None:
        if args.columns is not None:
            raise CommandError("--columns says where the fields of a --log are; --pairs files have named fields")
        sessions = user_scripts_from_pairs(args.pairs, args.sessions)
    else:
        sessions = user_scripts_from_log(args.log, args.sessions, columns=args.columns)
    users = [user for user, _ in sessions]
    scripts = [script for _, script in sessions]
    source = args.pairs or ", ".join(map(str, args.log))
    if not scripts:  # said before connecting
        raise CommandError(f"nothing to replay: {source} has no session of two or more queries (a log's sessions "
                           "are cut per user, in time order: a log without users or times has none)")
    if sign is not None and not any(map(signable, users)):
        raise CommandError(f"--as-users: no session of {source} has a user to replay it as (a log without a "
                           "user column, or pairs without 'user')")
    report = run_replay(args.url, scripts, options, quiet=args.quiet, users=users, sign=sign)
    print(format_report(report))
    if args.json:
        print(json.dumps(report))
    return 0
