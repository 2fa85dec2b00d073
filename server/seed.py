"""Personal histories seeded from query logs at start (``qac serve --seed-history LOG``).

Each user of the logs is the signed-in user of that id (the key :attr:`server.users.User.key`
gives a token the embedding site signs for that id), and gets what a history store fed by
their logged queries would hold: each query with how often and when last, bounded and
expiring as the store is. A log is older than the server's clock, so its times move forward
together, by one amount for all the logs, until the latest row of all is the moment of start;
recency and expiry then behave as for a log written live. A user the store already has a
history of keeps it (:meth:`server.history.HistoryStore.seed`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from indexer.errors import QacError
from indexer.personal import histories_at, user_events

from .history import HistoryEntry, HistoryStore
from .users import MAX_USER_ID, SIGNED_IN, User

log = logging.getLogger("qac.server")

_AT_ONCE = 32  # users seeded concurrently (a round trip each with Redis)


class SeedError(QacError):
    """A log that cannot seed histories: no row has both a user and a time."""


@dataclass(frozen=True)
class Seed:
    """Histories read from logs, ready for a store."""

    histories: dict[str, list[HistoryEntry]]  # user key -> entries, times shifted
    rows: int  # rows that went into them
    shift: float  # seconds added to every time of the logs


def seed_from_rows(rows: Iterable[tuple[str | None, float | None, str]], now: float, max_entries: int,
                   ttl: float) -> Seed:
    """Each logged user's history at ``now``, from log rows (user, time, normalized query)
    whose times are shifted so that the latest row of all is at ``now``. Rows without a user
    or a time, and users whose id is no signed-in id, are left out. Raises :class:`SeedError`
    when no row is left."""
    events = user_events((user, when, query) for user, when, query in rows
                         if user and len(user.encode("utf-8")) <= MAX_USER_ID)
    if not events:
        raise SeedError("no row with a user and a time to seed histories from")
    shift = now - max(max(when for when, _ in mine) for mine in events.values())
    after = math.nextafter(now, math.inf)  # histories_at: what was recorded before the moment
    histories = {}
    used = 0
    for user, mine in events.items():
        mine = sorted((when + shift, query) for when, query in mine)
        used += len(mine)
        history = next(histories_at(mine, [after], max_entries, ttl))
        if len(history):
            histories[User(user, SIGNED_IN).key] = [
                HistoryEntry(q, c, t) for q, c, t in zip(history.keys, history.counts, history.last_used)]
    return Seed(histories, used, shift)


async def seed_store(store: HistoryStore, seed: Seed) -> int:
    """Give each user of ``seed`` their history unless the store has one: how many got it."""
    seeded = 0
    users = list(seed.histories.items())
    for start in range(0, len(users), _AT_ONCE):
        done = await asyncio.gather(*(store.seed(key, entries) for key, entries in users[start:start + _AT_ONCE]))
        seeded += sum(done)
    log.info("seeded the personal histories of %d of %d logged users from %d rows (times moved %.1f days "
             "forward; the others already had one)", seeded, len(users), seed.rows, seed.shift / 86400)
    return seeded
