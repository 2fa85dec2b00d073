"""People, not rows: every count is of distinct users, and what fewer typed is dropped."""

from __future__ import annotations

import pytest

from indexer.blocklist import Blocklist
from indexer.train.counts import PrivacyError, check_users, count_people
from indexer.train.logs import LogRow
from indexer.train.sessions import sessions_of


def rows(*items: tuple[str | None, str, float | None]) -> list[LogRow]:
    return [LogRow(u, q, t) for u, q, t in items]


LOG = rows(
    # one heavy user asks the same thing 50 times
    *[("heavy", "my secret query", float(i * 3600)) for i in range(50)],
    ("a", "new york times", 0.0), ("a", "new york pizza", 60.0),
    ("b", "new york times", 0.0), ("b", "new york pizza", 60.0),
    ("c", "new york times", 0.0), ("c", "new york pizza", 60.0),
    ("d", "new york times", 0.0),
)


def test_a_query_counts_each_person_once() -> None:
    counts = count_people(LOG, sessions_of(LOG))
    assert counts.by_people
    assert counts.queries["my secret query"] == 1
    assert counts.queries["new york times"] == 4
    assert counts.words["york"] == 4 and counts.words["secret"] == 1
    assert counts.bigrams["new york"] == 4 and counts.bigrams["york pizza"] == 3
    assert counts.transitions["new york times\tnew york pizza"] == 3


def test_what_fewer_than_k_people_typed_is_dropped_everywhere() -> None:
    kept = count_people(LOG, sessions_of(LOG)).kept(3, Blocklist())
    assert "my secret query" not in kept.queries
    assert "secret" not in kept.words and "my secret" not in kept.bigrams
    assert set(kept.queries) == {"new york times", "new york pizza"}
    assert set(kept.transitions) == {"new york times\tnew york pizza"}
    assert set(count_people(LOG, sessions_of(LOG)).kept(4, Blocklist()).queries) == {"new york times"}


def test_blocked_terms_are_dropped_from_queries_words_bigrams_and_transitions() -> None:
    kept = count_people(LOG, sessions_of(LOG)).kept(1, Blocklist(["pizza"]))
    assert "new york pizza" not in kept.queries and "pizza" not in kept.words
    assert "york pizza" not in kept.bigrams
    assert not any("pizza" in t for t in kept.transitions)
    assert "new york times" in kept.queries


def test_a_log_without_users_counts_rows_and_needs_min_users_1() -> None:
    plain = rows((None, "a b", None), (None, "a b", None), (None, "a c", None))
    counts = count_people(plain, sessions_of(plain))
    assert not counts.by_people and counts.queries["a b"] == 2 and counts.words["a"] == 3
    check_users(plain, 1)
    with pytest.raises(PrivacyError, match="--min-users 1"):
        check_users(plain, 3)
