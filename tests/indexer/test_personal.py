"""A user's history as the ranking sees it, and as a log replays it."""

from __future__ import annotations

import math
import random

from indexer.personal import PersonalEntry, PersonalHistory, histories_at, pooled_history, query_words

DAY = 86400.0


def test_queries_under_a_prefix_come_most_used_first_then_most_recent() -> None:
    history = PersonalHistory([PersonalEntry("new york", 1, 50.0), PersonalEntry("news", 3, 10.0),
                               PersonalEntry("nets", 1, 90.0), PersonalEntry("weather", 9, 0.0)], now=100.0)
    assert history.starting_with("ne", 10) == ["news", "nets", "new york"]
    assert history.starting_with("ne", 2) == ["news", "nets"]
    assert history.starting_with("x", 10) == [] and len(history) == 4
    assert "news" in history and "new" not in history


def test_features_grow_with_use_and_fade_with_time() -> None:
    now = 30 * DAY
    history = PersonalHistory([PersonalEntry("a", 1, now), PersonalEntry("b", 5, now),
                               PersonalEntry("c", 1, now - 7 * DAY)], now=now)
    (count_a, recent_a), (count_b, _), (_, recent_c) = (history.features(q) for q in "abc")
    assert count_b > count_a > 0 and recent_a == 1.0 and recent_c == 0.5
    assert history.features("never") == (0.0, 0.0)
    table = history.features_of(["c", "never", "a"])
    assert table.tolist() == [list(history.features("c")), [0.0, 0.0], list(history.features("a"))]
    assert count_b == math.log1p(5)


def test_recent_words_split_the_latest_queries_newest_first() -> None:
    history = PersonalHistory([PersonalEntry("salem running calendar", 1, 20.0), PersonalEntry("ny times", 1, 10.0),
                               PersonalEntry("old", 1, 0.0)], now=30.0)
    assert history.recent_words(2) == [query_words("salem running calendar"), query_words("ny times")]
    assert query_words("salem running calendar") == (
        "salem running calendar",
        [("salem", "salem running calendar"), ("running", "running calendar"), ("calendar", "")],
    )
    assert query_words("x") == ("x", [("x", "")])


def test_replayed_histories_hold_only_the_past_bounded_and_expiring() -> None:
    events = [(0.0, "old"), (1.0, "a"), (2.0, "b"), (3.0, "a"), (100 * DAY, "late")]
    at = list(histories_at(events, [0.5, 3.0, 3.5, 100 * DAY + 1], max_entries=2, ttl=90 * DAY))
    assert at[0].keys == ["old"]
    assert set(at[1].keys) == {"a", "b"}  # bounded to 2: "old" was the least recently used
    assert at[2].counts[at[2].keys.index("a")] == 2
    assert at[3].keys == ["late"]  # the rest expired 90 days after last use


def test_a_query_asked_again_after_expiring_starts_its_count_anew() -> None:
    events = [(0.0, "a"), (1.0, "a"), (95 * DAY, "a")]
    (history,) = histories_at(events, [95 * DAY + 1], ttl=90 * DAY)
    assert history.counts == [1]


def test_a_pooled_history_takes_the_latest_queries_of_the_busiest_users() -> None:
    rows = [("a", 1.0, "one"), ("a", 2.0, "two"), ("a", 3.0, "one"), ("b", 4.0, "three"), ("b", 5.0, "four"),
            ("b", 6.0, "five"), ("c", 7.0, "six")]
    history = pooled_history(iter(rows), 4)  # b (3 distinct) then a (2): five queries, the latest four kept
    assert history.keys == ["five", "four", "one", "three"] and "six" not in history  # c was not needed
    assert history.counts[history.keys.index("one")] == 2
    assert history.recent(4) == ["one", "three", "four", "five"] and history.now == 6.0 + 3600



def _same(a: PersonalHistory, b: PersonalHistory) -> None:
    """Two histories a ranking cannot tell apart."""
    assert (a.keys, a.counts, a.last_used) == (b.keys, b.counts, b.last_used)
    used = dict(zip(a.keys, a.last_used))  # queries used at the same moment: in either order
    assert [used[q] for q in a.recent(len(a))] == [used[q] for q in b.recent(len(b))]
    assert set(a.recent(len(a))) == set(b.recent(len(b)))
    probe = [*a.keys, "never"]
    assert a.features_of(probe).tolist() == b.features_of(probe).tolist()
    for prefix in ("", "a", "b", "c"):
        assert a.starting_with(prefix, 5) == b.starting_with(prefix, 5)
    words = {w for q in [*a.keys, *b.keys] for w in q.split(" ")} | {"never", "a1", "zz"}
    assert [w in a.vocabulary() for w in words] == [w in b.vocabulary() for w in words]
    assert len(a.vocabulary()) == len(b.vocabulary())
    assert [a.vocabulary().starts(w[:2]) for w in words] == [b.vocabulary().starts(w[:2]) for w in words]


def test_a_recorded_submit_updates_the_history_as_rebuilding_it_would() -> None:
    rng = random.Random(7)
    now, ttl, bound = 200 * DAY, 90 * DAY, 25
    history = PersonalHistory([], now)
    history.vocabulary()  # asked once: from then on each record keeps it up to date
    store: dict[str, tuple[int, float]] = {}  # what the server's history store holds
    when = now - 95 * DAY
    for step in range(600):
        when += rng.choice([0.0, 1.0, 3 * DAY])  # ties, steps, and time for entries to expire
        query = rng.choice("abc") + str(rng.randrange(40)) + rng.choice(["", " x", " x y", " y y"])
        history.record(query, when, max_entries=bound, ttl=ttl)
        store = {q: e for q, e in store.items() if e[1] > when - ttl}
        store[query] = (store.pop(query, (0, when))[0] + 1, when)
        while len(store) > bound:
            del store[min((t, q) for q, (_, t) in store.items() if q != query)[1]]
        if step % 25 == 24:
            expected = PersonalHistory((PersonalEntry(q, c, t) for q, (c, t) in store.items()), now)
            assert expected.recent(len(expected)) == sorted(expected.keys, key=lambda q: (store[q][1], q))
            alive = PersonalHistory((PersonalEntry(q, c, t) for q, c, t in zip(history.keys, history.counts,
                                     history.last_used) if t > when - ttl), now)
            _same(alive, expected)
            if len(alive) == len(history):
                _same(history, expected)
            # The words of the queries it holds, whatever left it.
            words = {w for q in history.keys for w in q.split(" ")}
            assert len(history.vocabulary()) == len(words) and all(w in history.vocabulary() for w in words)
            assert all(history.vocabulary().starts(w[:2]) for w in words) and not history.vocabulary().starts("z")
    assert len(history) == bound


def test_a_recorded_submit_joins_the_features_the_recent_queries_and_the_prefixes() -> None:
    history = PersonalHistory([PersonalEntry("b", 2, 10.0), PersonalEntry("a", 1, 5.0)], now=20.0)
    history.recent_words(2)  # cached, then recomputed after the record
    history.record("ab", 20.0, max_entries=2)  # "a" was the least recently used: it goes
    assert history.keys == ["ab", "b"] and "a" not in history and history.features("a") == (0.0, 0.0)
    assert history.recent(2) == ["b", "ab"] and history.recent_words(1) == [query_words("ab")]
    assert history.features("ab") == (math.log1p(1), 1.0)
    history.record("b", 25.0, max_entries=2)
    assert history.counts == [1, 3] and history.recent(1) == ["b"]
    for i in range(10):  # more rows than the table had: it grows
        history.record(f"q{i}", 30.0 + i, max_entries=20)
    assert len(history) == 12 and history.features("q9") == (math.log1p(1), 1.0)


def test_a_copy_is_independent_of_its_original() -> None:
    history = PersonalHistory([PersonalEntry("a", 1, 5.0), PersonalEntry("b", 2, 6.0)], now=10.0)
    copy = history.copy()
    copy.record("c", 10.0, max_entries=2)
    assert history.keys == ["a", "b"] and history.recent(2) == ["a", "b"] and history.features("c") == (0.0, 0.0)
    assert copy.keys == ["b", "c"] and copy.recent(2) == ["b", "c"] and copy.features("a") == (0.0, 0.0)
