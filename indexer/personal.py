"""A user's own past queries, as the ranking sees them: suggested to that user only.

The server keeps each user's history (``server/history.py``); evaluation and the scorer's
training examples rebuild it from a log with :func:`histories_at`. Either way the ranking
gets a :class:`PersonalHistory`: the queries sorted (a prefix is one range of them), each with
how often the user asked it and when last. See docs/METHOD.md, "Privacy".
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

import numpy as np

# The server's defaults: the last 1,000 distinct queries, each kept 90 days after last use.
MAX_ENTRIES = 1000
TTL_SECONDS = 90 * 86400
_MAX_CHAR = "\U0010ffff"


class Entry(Protocol):
    """What a history store holds per query (``server.history.HistoryEntry`` is one)."""

    @property
    def query(self) -> str: ...

    @property
    def count(self) -> int: ...

    @property
    def last_used(self) -> float: ...


# A query and its words, each with the rest of the query from that word on ("" for the last).
QueryWords = tuple[str, list[tuple[str, str]]]


def query_words(query: str) -> QueryWords:
    """``query`` with its words (split at each space), each with the query from that word on
    (``""`` for the last word): ``("a b c", [("a", "a b c"), ("b", "b c"), ("c", "")])``."""
    toks = query.split(" ")
    out = []
    start = 0
    for j, w in enumerate(toks):
        out.append((w, query[start:] if j + 1 < len(toks) else ""))
        start += len(w) + 1
    return query, out


@dataclass(frozen=True, slots=True)
class PersonalEntry:
    query: str
    count: int
    last_used: float


def least_recent(by_recency: Iterable[tuple[str, float]], keep: str) -> str:
    """The least recently used query but ``keep`` (ties: the smallest), from (query, last
    use) pairs least recently used first: what a bounded history drops. Only the queries used
    at the same time as the least recent one are read."""
    victim, first = "", None
    for query, used in by_recency:
        if query == keep:
            continue
        if first is not None and used != first:
            break
        if first is None or query < victim:
            victim, first = query, used
    return victim


class Vocabulary:
    """The words of some queries, each counted over them (a query's words leave with the last
    query that has them), and sorted for prefix look-ups."""

    __slots__ = ("_counts", "_sorted")

    def __init__(self, queries: Iterable[str] = ()):
        self._counts = Counter(w for q in queries for w in q.split(" "))
        self._sorted = sorted(self._counts)

    def __contains__(self, word: object) -> bool:
        return word in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def starts(self, partial: str) -> bool:
        """Whether a word starts with ``partial``."""
        i = bisect_left(self._sorted, partial)
        return i < len(self._sorted) and self._sorted[i].startswith(partial)

    def add(self, query: str) -> None:
        for w in query.split(" "):
            if w not in self._counts:
                insort(self._sorted, w)
            self._counts[w] += 1

    def discard(self, query: str) -> None:
        for w in query.split(" "):
            left = self._counts[w] - 1
            if left > 0:
                self._counts[w] = left
            elif w in self._counts:
                del self._counts[w]
                del self._sorted[bisect_left(self._sorted, w)]

    def copy(self) -> Vocabulary:
        new = Vocabulary()
        new._counts, new._sorted = self._counts.copy(), self._sorted.copy()
        return new


class PersonalHistory:
    """One user's queries at one moment ``now``: sorted, with count and last use.

    Ranking only reads it; :meth:`record` counts a submit into it as a history store does,
    without rebuilding it (the server's copy follows its user's own submits that way)."""

    __slots__ = ("keys", "counts", "last_used", "now", "_at", "_by_recency", "_features", "_free", "_words",
                 "_vocabulary")

    def __init__(self, entries: Iterable[Entry], now: float):
        ordered = sorted((e.query, e.count, e.last_used) for e in entries if e.query)
        self.keys = [q for q, _, _ in ordered]
        self.counts = [c for _, c, _ in ordered]
        self.last_used = [t for _, _, t in ordered]
        self.now = now
        # The features of every query, computed once (a keystroke only gathers them), a row
        # each: row 0 stands for any query not in the history; a query keeps its row.
        self._at = {q: i + 1 for i, q in enumerate(self.keys)}
        days = np.maximum(0.0, now - np.array(self.last_used, dtype=np.float64)) / 86400
        self._features = np.zeros((len(self.keys) + 1, 2))
        self._features[1:, 0] = [math.log1p(c) for c in self.counts]
        self._features[1:, 1] = 1.0 / (1.0 + days / 7.0)
        self._free: list[int] = []  # rows of queries that left
        # The queries least recently used first (ties: in code point order).
        by_recency = sorted(range(len(self.keys)), key=self.last_used.__getitem__)
        self._by_recency = OrderedDict((self.keys[i], None) for i in by_recency)
        self._words: dict[int, list[QueryWords]] = {}  # recent_words(n), once asked
        self._vocabulary: Vocabulary | None = None  # vocabulary(), once asked; then kept up to date

    def record(self, query: str, when: float, max_entries: int = MAX_ENTRIES, ttl: float = TTL_SECONDS) -> None:
        """Count ``query`` once more, used at ``when``, as the server's history store does: a
        query expired by then starts anew, and beyond ``max_entries`` the least recently used
        query goes (ties: the smallest), never ``query``. Binary searches and a few moves
        within lists, not a rebuild."""
        i = bisect_left(self.keys, query)
        if i < len(self.keys) and self.keys[i] == query:
            self.counts[i] = 1 if self.last_used[i] <= when - ttl else self.counts[i] + 1
            self.last_used[i] = when
            row = self._at[query]
        else:
            self.keys.insert(i, query)
            self.counts.insert(i, 1)
            self.last_used.insert(i, when)
            row = self._at[query] = self._free.pop() if self._free else self._new_row()
            if self._vocabulary is not None:
                self._vocabulary.add(query)
        self._features[row] = (math.log1p(self.counts[i]), 1.0 / (1.0 + max(0.0, self.now - when) / 86400 / 7.0))
        recency = self._by_recency
        newest = next(reversed(recency), None)
        recency[query] = None
        recency.move_to_end(query)
        if newest is not None and self._used(newest) > when:  # the clock went back: order anew
            self._by_recency = OrderedDict((q, None) for q in sorted(recency, key=self._used))
        while len(self.keys) > max_entries:
            self._drop(self._victim(query))
        self._words.clear()

    def copy(self) -> PersonalHistory:
        """An independent copy: its lists and tables copied, nothing computed again."""
        new = PersonalHistory.__new__(PersonalHistory)
        new.keys, new.counts, new.last_used, new.now = self.keys.copy(), self.counts.copy(), self.last_used.copy(), \
            self.now
        new._at, new._by_recency, new._features = self._at.copy(), self._by_recency.copy(), self._features.copy()
        new._free, new._words = self._free.copy(), {}
        new._vocabulary = None if self._vocabulary is None else self._vocabulary.copy()
        return new

    def _used(self, query: str) -> float:
        return self.last_used[bisect_left(self.keys, query)]

    def _new_row(self) -> int:
        """A row at the end of the features, which double in size when full."""
        row = len(self._at) + 1  # rows 1.. are all in use while none is free
        if row >= len(self._features):
            grown = np.zeros((2 * len(self._features), 2))
            grown[: len(self._features)] = self._features
            self._features = grown
        return row

    def _victim(self, keep: str) -> str:
        return least_recent(((q, self._used(q)) for q in self._by_recency), keep)

    def _drop(self, query: str) -> None:
        i = bisect_left(self.keys, query)
        del self.keys[i], self.counts[i], self.last_used[i]
        row = self._at.pop(query)
        self._features[row] = 0.0
        self._free.append(row)
        del self._by_recency[query]
        if self._vocabulary is not None:
            self._vocabulary.discard(query)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, query: object) -> bool:
        return query in self._at

    def starting_with(self, prefix: str, k: int) -> list[str]:
        """Up to ``k`` of the user's queries that start with ``prefix``, most used first
        (count, then most recent)."""
        lo = bisect_left(self.keys, prefix)
        hi = bisect_left(self.keys, prefix + _MAX_CHAR, lo)
        best = sorted(range(lo, hi), key=lambda i: (-self.counts[i], -self.last_used[i]))[:k]
        return [self.keys[i] for i in best]

    def recent(self, n: int) -> list[str]:
        """The ``n`` queries used last, oldest first."""
        return list(islice(reversed(self._by_recency), n))[::-1] if n > 0 else []

    def recent_words(self, n: int) -> list[QueryWords]:
        """The ``n`` queries used last, newest first, each split into words (see
        :func:`query_words`); computed once per ``n``."""
        out = self._words.get(n)
        if out is None:
            out = self._words[n] = [query_words(q) for q in reversed(self.recent(n))]
        return out

    def vocabulary(self) -> Vocabulary:
        """Every word of the user's queries; computed once, then followed by :meth:`record`."""
        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self.keys)
        return self._vocabulary

    def features(self, query: str) -> tuple[float, float]:
        """(log(1 + count), recency in (0, 1]: 1 for just now, 1/2 a week ago), or zeros."""
        log_count, recency = self._features[self._at.get(query, 0)].tolist()
        return log_count, recency

    def features_of(self, queries: Sequence[str]) -> np.ndarray:
        """:meth:`features` of each query, as an (n, 2) array."""
        at = self._at
        return self._features[[at.get(q, 0) for q in queries]]


def histories_at(
    events: Sequence[tuple[float, str]],
    moments: Sequence[float],
    max_entries: int = MAX_ENTRIES,
    ttl: float = TTL_SECONDS,
) -> Iterator[PersonalHistory]:
    """One user's history just before each of ``moments`` (ascending), from their
    ``events`` (time, query), ascending: what a history store fed by those queries would hold,
    bounded and expiring as the server's is."""
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    j = 0
    for t in moments:
        while j < len(events) and events[j][0] < t:
            when, query = events[j]
            if last.get(query, when) <= when - ttl:  # expired meanwhile: the store starts it anew
                counts[query] = 0
            counts[query] = counts.get(query, 0) + 1
            last[query] = when
            j += 1
        alive = [q for q, when in last.items() if when > t - ttl]
        if len(alive) > max_entries:
            alive = sorted(alive, key=lambda q: last[q])[-max_entries:]
        yield PersonalHistory((PersonalEntry(q, counts[q], last[q]) for q in alive), t)


def user_events(rows: Iterable[tuple[str | None, float | None, str]]) -> dict[str, list[tuple[float, str]]]:
    """Each user's (time, query) events from (user, time, query) rows, rows without a user or a
    time left out: what their history is rebuilt from at any moment."""
    events: dict[str, list[tuple[float, str]]] = {}
    for user, when, query in rows:
        if user is not None and when is not None:
            events.setdefault(user, []).append((when, query))
    return events


def replay_histories(
    events: Mapping[str, Sequence[tuple[float, str]]], asks: Sequence[tuple[str | None, float | None]]
) -> list[PersonalHistory | None]:
    """For each (user, time) of ``asks``, that user's history just before then, from their
    ``events`` (time, query) in any order; None where the user or time is unknown."""
    wanted: dict[str, list[int]] = {}
    for i, (user, when) in enumerate(asks):
        if user is not None and when is not None and user in events:
            wanted.setdefault(user, []).append(i)
    out: list[PersonalHistory | None] = [None] * len(asks)
    for user, idx in wanted.items():
        idx.sort(key=lambda i: asks[i][1])  # type: ignore[arg-type, return-value]
        moments = [asks[i][1] for i in idx]
        for i, history in zip(idx, histories_at(sorted(events[user]), moments)):  # type: ignore[arg-type]
            out[i] = history
    return out


def pooled_history(rows: Iterable[tuple[str | None, float | None, str]], entries: int) -> PersonalHistory:
    """A heavy user's history for benchmarks: the ``entries`` most recent distinct queries of
    the users with the most distinct queries in ``rows`` (user, time, query), as the history
    store would hold them (no user of the AOL sample has 1,000)."""
    rows = list(rows)
    distinct: dict[str | None, set[str]] = {}
    for user, _, query in rows:
        distinct.setdefault(user, set()).add(query)
    pooled: set[str | None] = set()
    for user in sorted(distinct, key=lambda u: -len(distinct[u])):
        if sum(len(distinct[u]) for u in pooled) >= entries:
            break
        pooled.add(user)
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    for user, time, query in rows:
        if user in pooled:
            counts[query] = counts.get(query, 0) + 1
            last[query] = max(last.get(query, 0.0), time or 0.0)
    recent = sorted(last, key=last.__getitem__)[-entries:]
    now = max(last.values()) + 3600
    return PersonalHistory([PersonalEntry(q, counts[q], last[q]) for q in recent], now)

