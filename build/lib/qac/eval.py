"""``qac eval``: a model against most-popular completion on evaluation pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``qac`` subcommands."""
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``qac eval``: score the model and most-popular completion on the pairs."""
    from tqdm import tqdm

    from indexer import load
    from indexer.evaluate import evaluate, format_report, read_pairs

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    model = load(args.index)
    pairs = read_pairs(args.pairs, args.limit)
    with tqdm(total=len(pairs), desc="eval", unit="pair", disable=args.quiet, leave=False) as bar:
        result = evaluate(model, pairs, progress=bar.update)
    print(format_report(result))
    if args.json:
        print(json.dumps(result))
    return 0
