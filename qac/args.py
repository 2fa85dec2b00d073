"""Argument types and the error every subcommand raises for bad flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from indexer.errors import QacError

T = TypeVar("T")


class CommandError(QacError):
    """A flag or input the command cannot use: one line, exit code 2."""


def positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type: ``kind`` of the text, refused unless > 0."""

    def parse(text: str) -> T:
        value = kind(text)
        if not value > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def list_of(kind: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    """An argparse type: comma-separated values of ``kind``, each > 0."""
    one = positive(kind)

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


def add_columns_flag(parser: argparse.ArgumentParser, logs: str = "a log") -> None:
    """Add ``--columns``: where the fields of ``logs`` (in --help's words) are when they have no header."""
    from indexer.train.logs import parse_columns

    def parse(text: str) -> dict[str, int | str]:
        try:
            return parse_columns(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = "columns"
    parser.add_argument(
        "--columns", type=parse, metavar="user=N,query=N,time=N",
        help=f"where {logs} without a header line has its fields, counted from 1 as cut -f does (or, "
        "for a header or JSON lines with other names, the names: query=search_terms); user and time "
        "are optional. Default: the header's AnonID/user/user_id/uid, Query/query/q and "
        "QueryTime/time/timestamp/ts, or without a header user=1,query=2,time=3")


def csv(values: tuple[object, ...]) -> str:
    """``values`` as the text :func:`list_of` reads back."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
