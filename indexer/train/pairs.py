"""Evaluation pairs from a log, by the standard protocol of session-aware QAC work on AOL.

A log is split by date into train, dev and test logs; each evaluation log is cut into sessions
(:func:`~indexer.train.sessions.sessions_of`: per user in time order, a new session after more
than 30 minutes, consecutive duplicates collapsed) and every consecutive pair of queries of a
session is one pair, with one prefix length drawn uniformly from 1..len(next query) by
``numpy.random.RandomState(seed)`` (:func:`~indexer.train.examples.protocol_pairs`), users in
the order they first appear in the log, sessions in time order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..times import format_time
from .examples import protocol_pairs
from .logs import LogError, LogRow
from .sessions import sessions_of

TRAIN, DEV, TEST = "train", "dev", "test"
LOG_HEADER = "AnonID\tQuery\tQueryTime"


@dataclass(frozen=True)
class Split:
    """One part of a log: its name, rows (in the log's order) and the pairs made from them."""

    name: str
    rows: list[LogRow]
    sessions: int = 0
    pairs: tuple[dict[str, str | None], ...] = ()


def split_by_date(rows: Sequence[LogRow], dev_from: float | None, test_from: float | None) -> list[Split]:
    """``rows`` before ``dev_from`` (train), from ``dev_from`` (dev) and from ``test_from``
    (test), in the log's order. Without either date, one split of every row, named dev.
    Raises :class:`LogError` for rows without user or time, dates out of order or an empty split."""
    if any(r.user is None or r.time is None for r in rows):
        raise LogError("evaluation pairs need a user and a time on every row; the log has rows without "
                       "(a log with only queries, or no user or time column)")
    if dev_from is not None and test_from is not None and test_from <= dev_from:
        raise LogError("--test-from must be after --dev-from")
    if dev_from is None and test_from is None:
        return [Split(DEV, list(rows))]
    first = dev_from if dev_from is not None else test_from
    bounds: list[tuple[str, float | None, float | None]] = [(TRAIN, None, first)]
    if dev_from is not None:
        bounds.append((DEV, dev_from, test_from))
    if test_from is not None:
        bounds.append((TEST, test_from, None))
    splits = []
    for name, start, end in bounds:
        part = [r for r in rows if (start is None or r.time >= start) and (end is None or r.time < end)]  # type: ignore[operator]
        if not part:
            raise LogError(f"no row of the log falls in its {name} part ({_span(start, end)})")
        splits.append(Split(name, part))
    return splits


def _span(start: float | None, end: float | None) -> str:
    if start is None:
        return f"before {format_time(end)}"  # type: ignore[arg-type]
    return f"from {format_time(start)}" + ("" if end is None else f" to before {format_time(end)}")


def with_pairs(split: Split, seed: int = 0, local_times: bool = True) -> Split:
    """``split`` with its evaluation pairs: ``{prev_query, prefix, next_query, user, time}``, the time
    that of the next query, as ``YYYY-MM-DD hh:mm:ss`` local time or with ``local_times=False``
    ISO 8601 UTC. Raises :class:`LogError` if no session has two queries."""
    sessions = sessions_of(split.rows)
    pairs = tuple(
        {"prev_query": e.prev, "prefix": e.prefix, "next_query": e.target, "user": e.user,
         "time": format_time(e.time, local_times)}  # type: ignore[arg-type]
        for e in protocol_pairs(sessions, seed)
    )
    if not pairs:
        raise LogError(f"the {split.name} log makes no pair: none of its {len(sessions):,} sessions has two queries")
    return Split(split.name, split.rows, len(sessions), pairs)


def pairs_jsonl(split: Split) -> bytes:
    """The pairs of ``split``, one JSON object a line."""
    return "".join(json.dumps(p) + "\n" for p in split.pairs).encode()


def log_tsv(rows: Sequence[LogRow], local_times: bool = True) -> bytes:
    """``rows`` as a TSV log with the header ``AnonID  Query  QueryTime`` (queries normalized, as
    read), which ``qac build`` and ``qac pairs`` read back to the same rows."""
    lines = [LOG_HEADER]
    for r in rows:
        user = " ".join(str(r.user).split())  # a tab or newline in an id would break the line
        lines.append(f"{user}\t{r.query}\t{format_time(r.time, local_times)}")  # type: ignore[arg-type]
    return ("\n".join(lines) + "\n").encode()
