"""Cutting a log into sessions: per user, in time order, split on an inactivity gap."""

from __future__ import annotations

from collections.abc import Iterable

from .logs import LogRow

SESSION_GAP_SECONDS = 30 * 60


def sessions_of(rows: Iterable[LogRow], gap: float = SESSION_GAP_SECONDS) -> list[list[LogRow]]:
    """Group rows into sessions: one user, time-ordered, no gap longer than ``gap`` seconds.

    Consecutive duplicate queries collapse into one (the first keeps its time). Rows without
    a user or time (a plain query list) each make a session of their own.
    """
    timed = [r for r in rows if r.user is not None and r.time is not None]
    sessions: list[list[LogRow]] = [[r] for r in rows if r.user is None or r.time is None]
    # Stable sort: users keep their order of first appearance within equal keys.
    order: dict[str | None, int] = {}
    for r in timed:
        order.setdefault(r.user, len(order))
    timed.sort(key=lambda r: (order[r.user], r.time))
    current: list[LogRow] = []
    previous: LogRow | None = None
    for row in timed:
        # The gap is measured between raw rows, before duplicates collapse.
        if previous is not None and (
            row.user != previous.user or row.time - previous.time > gap  # type: ignore[operator]
        ):
            sessions.append(current)
            current = []
        previous = row
        if current and row.query == current[-1].query:
            continue
        current.append(row)
    if current:
        sessions.append(current)
    return sessions
