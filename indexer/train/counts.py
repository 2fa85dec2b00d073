"""What the log says people asked: queries, words, word bigrams and query transitions, each
counted by distinct users, kept only when at least ``min_users`` people typed it and no
blocklist term is in it (docs/METHOD.md, "Privacy").

A log without users (one query per line) cannot tell people apart: it is counted by rows,
and only ``min_users=1`` may use it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..blocklist import Blocklist
from ..errors import QacError
from ..wordmodel import TRANSITION_SEP, WordModel
from .logs import LogRow


class PrivacyError(QacError):
    """The log cannot honour the requested number of distinct users."""


@dataclass
class PeopleCounts:
    """Distinct users (or rows, for a log without users) per query, word, bigram and
    transition (``"prev\\tnext"``)."""

    queries: Counter[str]
    words: Counter[str]
    bigrams: Counter[str]
    transitions: Counter[str]
    by_people: bool

    def kept(self, min_users: int, blocklist: Blocklist) -> PeopleCounts:
        """Only what at least ``min_users`` people typed and ``blocklist`` lets through."""
        return PeopleCounts(
            _kept(self.queries, min_users, blocklist.mask),
            _kept(self.words, min_users, blocklist.mask),
            _kept(self.bigrams, min_users, blocklist.mask),
            _kept(self.transitions, min_users,
                  lambda keys: blocklist.mask([k.replace(TRANSITION_SEP, " ") for k in keys])),
            self.by_people,
        )

    def word_model(self) -> WordModel:
        return WordModel.from_counts(self.words, self.bigrams, self.transitions)


def _kept(counts: Counter[str], min_users: int, mask: Callable[[list[str]], np.ndarray]) -> Counter[str]:
    keys = [k for k, n in counts.items() if n >= min_users]
    blocked = mask(keys)
    return Counter({k: counts[k] for k, bad in zip(keys, blocked.tolist()) if not bad})


def check_users(rows: Sequence[LogRow], min_users: int) -> None:
    """Raise :class:`PrivacyError` if ``min_users > 1`` but some rows carry no user."""
    if min_users > 1 and any(r.user is None for r in rows):
        raise PrivacyError(
            f"the log has rows without a user id (one query per line), so nothing shows that "
            f"{min_users} different people typed a query; build with --min-users 1 to suggest "
            f"every logged query to everyone"
        )


def count_people(rows: Sequence[LogRow], sessions: Sequence[Sequence[LogRow]]) -> PeopleCounts:
    """Count every query, word, bigram and transition once per user who typed it."""
    if not rows or any(r.user is None for r in rows):
        return _count_rows(rows, sessions)
    asked: defaultdict[str, set[str]] = defaultdict(set)
    for r in rows:
        asked[r.user].add(r.query)  # type: ignore[index]
    queries: Counter[str] = Counter()
    words: Counter[str] = Counter()
    bigrams: Counter[str] = Counter()
    for distinct in asked.values():
        queries.update(distinct)
        w: set[str] = set()
        b: set[str] = set()
        for q in distinct:
            toks = q.split(" ")
            w.update(toks)
            b.update(x + " " + y for x, y in zip(toks, toks[1:]))
        words.update(w)
        bigrams.update(b)
    followed: defaultdict[str, set[str]] = defaultdict(set)
    for s in sessions:
        followed[s[0].user].update(a.query + TRANSITION_SEP + b.query for a, b in zip(s, s[1:]))  # type: ignore[index]
    transitions: Counter[str] = Counter()
    for pairs in followed.values():
        transitions.update(pairs)
    return PeopleCounts(queries, words, bigrams, transitions, by_people=True)


def _count_rows(rows: Sequence[LogRow], sessions: Sequence[Sequence[LogRow]]) -> PeopleCounts:
    queries = Counter(r.query for r in rows)
    words: Counter[str] = Counter()
    bigrams: Counter[str] = Counter()
    for query, count in queries.items():
        toks = query.split(" ")
        for w in toks:
            words[w] += count
        for a, b in zip(toks, toks[1:]):
            bigrams[a + " " + b] += count
    transitions = Counter(a.query + TRANSITION_SEP + b.query for s in sessions for a, b in zip(s, s[1:]))
    return PeopleCounts(queries, words, bigrams, transitions, by_people=False)
