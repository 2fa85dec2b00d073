"""A user's history as the ranking sees it, and as a log replays it."""

from __future__ import annotations

import math

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

