import math

import pytest

from indexer.evaluate import PairsError, Scores, length_bucket, rank_weighted_bleu, read_pairs, sentence_bleu


def test_bleu_of_identical_sentences_is_one():
    assert sentence_bleu("new york times today".split(), "new york times today".split()) == pytest.approx(1.0)


def test_bleu_of_short_identical_sentences_is_smoothed_like_nltk():
    # Three words have no 4-gram: NLTK's method 1 counts that precision as 0.1 / 1.
    assert sentence_bleu("new york times".split(), "new york times".split()) == pytest.approx(0.1**0.25)


def test_bleu_without_any_shared_word_is_zero():
    assert sentence_bleu("new york".split(), "los angeles".split()) == 0.0


def test_bleu_smooths_missing_ngrams_and_penalizes_brevity():
    # p1..p3 = 1, p4 has no 4-gram: (0 + 0.1) / 1; brevity penalty exp(1 - 4/3).
    expected = math.exp(1 - 4 / 3) * 0.1**0.25
    assert sentence_bleu("a b c d".split(), "a b c".split()) == pytest.approx(expected)


def test_rank_weighted_bleu_trusts_the_first_suggestion_most():
    good_first = rank_weighted_bleu("a b c d", ["a b c d", "x y"])
    good_second = rank_weighted_bleu("a b c d", ["x y", "a b c d"])
    assert good_first == pytest.approx(2 / 3) and good_second == pytest.approx(1 / 3)


def test_scores_count_reciprocal_rank_within_ten():
    s = Scores()
    s.add("b", ["a", "b"])
    s.add("z", ["a"])
    s.add("k", [str(i) for i in range(10)] + ["k"])
    r = s.report()
    assert r["mrr"] == pytest.approx(0.5 / 3, abs=1e-4)
    assert r["success@1"] == 0 and r["success@10"] == pytest.approx(1 / 3, abs=1e-4)


def test_length_buckets():
    assert [length_bucket(p) for p in ["a", "abc", "abcd", "abcdefg", "abcdefgh"]] == ["1-3", "1-3", "4-7", "4-7", "8+"]


def test_pairs_file_skips_bad_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prev_query": "a", "prefix": "b", "next_query": "bc"}\nnope\n{"prefix": 1}\n')
    assert len(read_pairs(path)) == 1
    with pytest.raises(PairsError):
        read_pairs(tmp_path / "missing.jsonl")


def test_a_pairs_personal_history_holds_only_what_its_user_asked_before_it() -> None:
    from indexer.evaluate import Pair, pair_histories

    pairs = [
        Pair("weather", "ny t", "ny times", "u1", 1000.0),
        Pair("ny times", "ny p", "ny post", "u1", 2000.0),  # prev = the pair before's next: once
        Pair("", "b", "bbc", "u2", 1500.0),
        Pair("", "c", "cnn", None, None),
    ]
    log = [("u1", 10.0, "old query"), ("u1", 5000.0, "later query"), ("u2", 20.0, "bbc"), ("u3", 1.0, "x")]
    first, second, other, nobody = pair_histories(pairs, log)
    assert set(first.keys) == {"old query", "weather"}
    assert set(second.keys) == {"old query", "weather", "ny times"}
    assert second.counts[second.keys.index("ny times")] == 1
    assert other.keys == ["bbc"] and "later query" not in second and nobody is None


def test_leaks_count_other_peoples_rare_queries_only() -> None:
    from indexer.evaluate import Leaks
    from indexer.personal import PersonalEntry, PersonalHistory

    leaks = Leaks({"rare one": 1, "rare two": 2, "common": 3})
    mine = PersonalHistory([PersonalEntry("rare two", 1, 0.0)], now=1.0)
    leaks.add("rare o", ["rare one", "rare two", "common", "never logged"], mine)
    leaks.add("rare one", ["rare one"], None)  # what the user typed is no leak
    leaks.add("r", ["rare one"], None, ["rare one"])  # nor what this session asked
    assert leaks.report() == {"leak_rate": round(1 / 6, 4), "shown": 6, "leaked": 1}
