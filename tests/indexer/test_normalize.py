import re
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from indexer.normalize import normalize, normalize_prefix


def test_protocol_examples():
    assert normalize("St. Louis Cardinals!") == "st louis cardinals"
    assert normalize("www.Google.com") == "www google com"


def test_query_with_nothing_left_is_empty():
    assert normalize(" ...!? ") == ""


def test_whitespace_collapses():
    assert normalize("  new\t york  ") == "new york"


def test_prefix_keeps_a_typed_separator():
    assert normalize_prefix("New Y") == "new y"
    assert normalize_prefix("new ") == "new "
    assert normalize_prefix("st.") == "st "
    assert normalize_prefix("   ") == ""


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once


def _reference(query: str) -> str:
    """The rule of the docstring, step by step (normalize() skips it for text already normal)."""
    query = unicodedata.normalize("NFKC", query)
    pieces = (re.sub(r"\W+", "", piece) for piece in re.split(r"[\s.]+", query))
    return " ".join(piece for piece in pieces if piece).lower()


# Mostly what is already normal (lowercase words, single spaces), with the characters that make
# a text not so: capitals, doubled or trailing spaces, dots, punctuation, tabs, accents.
_NEAR_NORMAL = st.text(st.sampled_from("ab z09_  " + "A.!\t-é"), max_size=12)


@given(_NEAR_NORMAL)
@example("new york")
@example("new york ")
@example("new york  ")
@example("new  york")
@example(" new")
@example("New york")
@example("new_york 2")
def test_text_already_normal_is_returned_as_the_rule_would(text):
    assert normalize(text) == _reference(text)
    expected = _reference(text)
    if expected and re.fullmatch(r"[\s.]", text[-1:]):
        expected += " "
    assert normalize_prefix(text) == expected
