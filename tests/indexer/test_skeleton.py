"""The look-alike skeleton that blocked and sensitive terms are matched on."""

from __future__ import annotations

import pytest

from indexer.normalize import normalize
from indexer.skeleton import skeleton


@pytest.mark.parametrize("typed", [
    "fuсk",  # Cyrillic es
    "FUСK",  # Cyrillic capital es, lowercased by normalize
    "fυck",  # Greek upsilon
    "ｆｕｃｋ",  # full width (NFKC)
    "fúck", "fü̈ck", "fu\u0301ck",  # accents, precomposed or combining
    "fu\u3164ck", "fu\u115fck", "fu\u1160ck", "f\uffa0uck",  # Hangul fillers inside the word
    "f_u_c_k", "f.u.c.k", "f u c k", "f. u. c. k.", "f__u__c__k",
    "fu\u200bck", "fu\u00adck",  # zero width space, soft hyphen
])
def test_look_alikes_of_a_word_have_its_skeleton(typed: str) -> None:
    assert skeleton(normalize(typed)) == "fuck"


def test_words_stay_words() -> None:
    assert skeleton("new york times") == "new york times"
    assert skeleton("the fuсk_you page") == "the fuck you page"
    assert skeleton("a b c news") == "abc news"  # single letters in a row are one word
    assert skeleton("vitamin a and b") == "vitamin a and b"  # one single letter is left alone
    assert skeleton("big f u c k off") == "big fuck off"
    assert skeleton("") == "" and skeleton("\u3164") == ""


def test_ascii_is_not_folded() -> None:
    # TR39 reads rn as m and cl as d; matching on that would block "burn" with "bum".
    for word in ("burn", "click", "corn", "l0l", "1ive"):
        assert skeleton(word) == word


def test_only_matching_uses_it() -> None:
    # normalize() keeps the text as typed (what is shown); only the skeleton folds it.
    assert normalize("Crème Brûlée") == "crème brûlée"
    assert skeleton("crème brûlée") == "creme brulee"
    assert skeleton("привет мир") == skeleton("привет мир")  # stable, cached
