"""``qac complete``: print a model's completions of one prefix."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import positive


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``complete`` to the ``qac`` subcommands."""
    p = sub.add_parser("complete", help="print the completions of a prefix",
                       description="Print a model's ten completions of PREFIX, optionally after earlier queries.")
    p.add_argument("--index", required=True, type=Path, metavar="DIR", help="model directory")
    p.add_argument("prefix", help="the text typed so far")
    p.add_argument("--prev", action="append", default=[], metavar="QUERY",
                   help="an earlier query of the session; repeat, oldest first")
    p.add_argument("-k", type=positive(int), default=10, help="how many completions (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac complete``: print the completions."""
    from indexer import load

    for c in load(args.index).complete(args.prefix, args.prev, k=args.k):
        marks = "".join(m for m, on in (("  (corrected)", c.corrected), ("  (yours)", c.personal)) if on)
        print(f"{c.score:8.3f}  {c.query}{marks}")
    return 0
