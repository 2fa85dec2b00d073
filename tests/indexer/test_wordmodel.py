import math
from collections import Counter

import pytest

from indexer.train.counts import count_people
from indexer.train.logs import LogRow
from indexer.wordmodel import TRANSITION_SEP, WordModel, split_prefix

QUERIES = [("new york times", 5), ("new york pizza", 2), ("ny times", 3), ("nyc tickets", 1), ("times square", 4)]
PAIRS = [("ny times", "new york times"), ("ny times", "new york times"), ("ny times", "nyc tickets")]


def model():
    counts = count_people([LogRow(None, q, None) for q, n in QUERIES for _ in range(n)], [])
    return WordModel.from_counts(counts.words, counts.bigrams, Counter(a + TRANSITION_SEP + b for a, b in PAIRS))


def test_completes_a_partial_last_word_with_followers_first():
    words = model().complete_word("york", "p", 5)
    assert words[0] == "pizza"
    words = model().complete_word("", "ti", 5)
    assert words == ["times", "tickets"]


def test_word_completions_and_followers_asked_again_are_the_same_and_remembered_in_bounded_memory(monkeypatch):
    import indexer.wordmodel

    monkeypatch.setattr(indexer.wordmodel, "COMPLETIONS_MEMO", 3)
    m = model()
    asked = [("york", "p"), ("", "ti"), ("", "n"), ("new", ""), ("", ""), ("york", "p")]
    first = [m.complete_word(w, p, 5) for w, p in asked]
    assert first == [list(m._complete_word(w, p, 5)) for w, p in asked]
    assert [m.complete_word(w, p, 5) for w, p in asked] == first
    assert 0 < len(m._completions) <= 3
    first[0].append("changed by a caller")  # a copy: what is remembered stays as it was
    assert m.complete_word("york", "p", 5) == first[0][:-1]
    assert m.followers("new", 2) == ["york"] and m.followers("new", 2) == ["york"]


def test_word_probability_is_among_words_with_the_same_start():
    m = model()
    # "times" occurs 5 + 3 + 4 = 12 times, "tickets" once: P(times | "ti") = 12 / 13.
    times, tickets, zebra = m.word_logps(["times", "tickets", "zebra"], "ti")
    assert times == pytest.approx(math.log(12 / 13)) and tickets == pytest.approx(math.log(1 / 13))
    assert zebra < -10


def test_bigram_probability_is_among_followers_with_the_same_start():
    m = model()
    # After "york": "times" 5 times, "pizza" twice.
    assert m.bigram_logps("york", ["times", "pizza"], "")[0] == pytest.approx(math.log(5 / 7))
    assert m.bigram_logps("", ["times"], "t")[0] < -10


def test_transitions_are_counted_and_prefix_filtered():
    m = model()
    assert m.transition_count("ny times", "new york times") == 2
    assert [q for q, _ in m.next_queries("ny times", "n", 5)] == ["new york times", "nyc tickets"]
    assert [q for q, _ in m.next_queries("ny times", "nyc", 5)] == ["nyc tickets"]


def test_split_prefix():
    assert split_prefix("new york ti") == ("new york ", "york", "ti")
    assert split_prefix("new ") == ("new ", "new", "")
    assert split_prefix("ne") == ("", "", "ne")
