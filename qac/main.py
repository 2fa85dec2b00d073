"""``qac``: build, evaluate, query, serve, replay and benchmark completion models.

Each subcommand's module parses its flags and calls the libraries; any
:class:`indexer.errors.QacError` they raise becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from indexer.errors import QacError

from . import bench, build, complete, eval, pairs, replay, serve

EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE
COMMANDS = (build, pairs, eval, complete, serve, replay, bench)


def make_parser() -> argparse.ArgumentParser:
    """The ``qac`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="qac", description="Session-aware query autocompletion: build, evaluate, serve."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qac``; returns the exit code."""
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the subcommand's usage, not the top level's
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone away is found here, not in the interpreter's exit
        return code
    except QacError as exc:
        print(f"qac {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (qac eval ... | head): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is quiet too
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
