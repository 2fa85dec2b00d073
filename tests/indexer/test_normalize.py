from hypothesis import given
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
