"""The blocklist: whole-word and phrase matching, normalization, files, the default list."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.blocklist import Blocklist, BlocklistError
from indexer.errors import QacError
from indexer.normalize import normalize


def test_whole_words_not_substrings() -> None:
    bl = Blocklist(["foo"])
    assert bl.blocks("foo")
    assert bl.blocks("big foo bar")
    assert bl.blocks("bar foo")
    assert not bl.blocks("food")
    assert not bl.blocks("afoo")
    assert not bl.blocks("fo o")
    assert not bl.blocks("")


def test_phrases_match_consecutive_words() -> None:
    bl = Blocklist(["foo bar"])
    assert bl.blocks("foo bar")
    assert bl.blocks("x foo bar y")
    assert not bl.blocks("foo x bar")
    assert not bl.blocks("bar foo")
    assert not bl.blocks("foo")
    assert not bl.blocks("foobar")
    # a phrase starting where a partial match failed
    assert Blocklist(["aa bb cc"]).blocks("aa bb aa bb cc")
    assert not Blocklist(["aa bb cc"]).blocks("aa bb dd cc")


def test_mixed_lengths() -> None:
    bl = Blocklist(["one", "two words", "three word phrase"])
    assert bl.blocks("x three word phrase")
    assert not bl.blocks("three word")
    assert bl.blocks("two words please")
    assert bl.blocks("x one")
    assert not bl.blocks("word phrase two")


def test_terms_and_queries_are_normalized() -> None:
    bl = Blocklist(["  Foo!  ", "F.O.O!", "Bad-Word", "Two   Spaced"])
    assert bl.terms == ("badword", "f o o", "foo", "two spaced")
    assert bl.blocks(normalize("FOO?!"))
    assert bl.blocks(normalize("what is f.o.o."))
    assert bl.blocks(normalize("a BAD-word here"))
    assert bl.blocks(normalize("two\tSPACED"))
    assert not bl.blocks(normalize("bad word"))


def test_terms_that_normalize_to_nothing_are_dropped() -> None:
    bl = Blocklist(["", "   ", "!!!", "🖕", "ok"])
    assert bl.terms == ("ok",)
    assert len(bl) == 1
    assert not bl.blocks("anything")


def test_one_string_is_refused() -> None:
    with pytest.raises(TypeError):
        Blocklist("foo")  # type: ignore[arg-type]


def test_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# a header\n\nfoo\n   # indented comment\nbar baz  # trailing comment\n\n", encoding="utf-8")
    bl = Blocklist.from_files([path], default=False)
    assert bl.terms == ("bar baz", "foo")
    assert not bl.blocks("a header")
    assert not bl.blocks("trailing comment")


def test_from_files_reads_utf8_and_adds_the_default(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("Crème Brûlée\n", encoding="utf-8")
    own = Blocklist.from_files(path, default=False)
    assert own.terms == ("crème brûlée",)
    with_default = Blocklist.from_files([str(path)])
    assert len(with_default) == len(Blocklist.default()) + 1
    assert with_default.blocks("crème brûlée") and with_default.blocks("porn")
    assert Blocklist.from_files([]) == Blocklist.default()


def test_from_files_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(BlocklistError) as info:
        Blocklist.from_files([missing], default=False)
    assert str(missing) in str(info.value)
    assert "No such file" in str(info.value)
    assert isinstance(info.value, QacError)


def test_from_files_not_utf8_and_directory(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(BlocklistError, match="latin1.txt.*UTF-8"):
        Blocklist.from_files([bad], default=False)
    with pytest.raises(BlocklistError, match=str(tmp_path)):
        Blocklist.from_files([tmp_path], default=False)


def test_text_round_trip() -> None:
    bl = Blocklist(["zeta", "Alpha Beta", "ünïcode wörd"])
    text = bl.to_text()
    assert text.startswith("#")
    back = Blocklist.from_text(text)
    assert back == bl
    assert back.terms == bl.terms
    assert back.digest() == bl.digest()
    assert Blocklist.from_text(Blocklist().to_text()) == Blocklist()


def test_default_round_trip(tmp_path: Path) -> None:
    bl = Blocklist.default()
    path, sensitive = tmp_path / "blocklist.txt", tmp_path / "sensitive.txt"
    path.write_text(bl.to_text(), encoding="utf-8")
    sensitive.write_text(bl.sensitive_text(), encoding="utf-8")
    assert Blocklist.from_files([path], default=False, sensitive=[sensitive]) == bl
    assert Blocklist.from_files([path], default=False) == Blocklist(bl.terms)
    assert Blocklist.from_files(path, default=False, sensitive=str(sensitive)) == bl
    assert Blocklist.from_text(bl.to_text(), bl.sensitive_text()) == bl


def test_digest_terms_len_union() -> None:
    a = Blocklist(["b", "a", "a"])
    assert a.terms == ("a", "b")
    assert len(a) == 2
    assert a.digest() == hashlib.sha256(b"a\nb\n").hexdigest()
    assert a.digest() == Blocklist(["B", "A"]).digest()
    assert a.digest() != Blocklist(["a"]).digest()
    u = a.union(Blocklist(["cc dd"], sensitive=["ee"]))
    assert u.terms == ("a", "b", "cc dd") and u.sensitive == ("ee",)
    assert u.blocks("xx cc dd") and not a.blocks("xx cc dd")
    assert (a | Blocklist(["cc dd"], ["ee"])) == u != a.union(Blocklist(["cc dd"]))
    assert len(Blocklist()) == 0 and Blocklist().terms == ()


def test_immutable() -> None:
    bl = Blocklist(["a"])
    with pytest.raises(AttributeError):
        bl._terms = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        bl.terms = ()  # type: ignore[misc]
    assert hash(bl) == hash(Blocklist(["A"]))


def test_blocks_prefix() -> None:
    bl = Blocklist(["foo", "bar baz"])
    assert not bl.blocks_prefix("foo")  # may become "food"
    assert bl.blocks_prefix("foo ")
    assert bl.blocks_prefix("foo b")
    assert bl.blocks_prefix("FOO.")
    assert bl.blocks_prefix("x Foo! y")
    assert not bl.blocks_prefix("food ")
    assert not bl.blocks_prefix("bar ba")
    assert not bl.blocks_prefix("bar baz")  # "bazaar" is still possible
    assert bl.blocks_prefix("bar baz ")
    assert bl.blocks_prefix("bar baz q")
    assert not bl.blocks_prefix("")
    assert not bl.blocks_prefix(" ")


def test_mask_small() -> None:
    bl = Blocklist(["foo", "bar baz"])
    m = bl.mask(["foo", "food", "a bar baz", "bar x baz", "", "baz bar"])
    assert m.dtype == np.bool_
    assert m.tolist() == [True, False, True, False, False, False]
    assert Blocklist().mask(["foo", "bar"]).tolist() == [False, False]
    assert bl.mask([]).shape == (0,)
    assert Blocklist(["foo"]).mask(["a foo", "foo a", "fooa"]).tolist() == [True, True, False]


# Words of two letters: single letters in a row are one word (f u c k is fuck; test_skeleton.py).
WORDS = st.sampled_from(["aa", "bb", "cc", "dd", "ab", "ba", "cd", "ee"])
PHRASES = st.lists(WORDS, min_size=1, max_size=3).map(" ".join)
QUERIES = st.lists(WORDS, min_size=0, max_size=8).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(terms=st.lists(PHRASES, max_size=6), queries=st.lists(QUERIES, max_size=40))
def test_mask_equals_blocks(terms: list[str], queries: list[str]) -> None:
    bl = Blocklist(terms)
    expected = [bl.blocks(q) for q in queries]
    assert bl.mask(queries).tolist() == expected
    # and blocks() agrees with a naive definition: some term is a run of consecutive words
    for q, got in zip(queries, expected):
        padded = f" {q} "
        assert got == any(f" {t} " in padded for t in bl.terms)


@settings(max_examples=300, deadline=None)
@given(terms=st.lists(PHRASES, max_size=6), head=QUERIES, rest=QUERIES)
def test_a_blocked_head_blocks_every_query_that_starts_with_it(terms: list[str], head: str, rest: str) -> None:
    # What Model.complete relies on to skip the check of each candidate under such a prefix
    # (single letters aside: "x x x " is blocked, "x x x y" is "xxxy"; hiding those is no leak).
    bl = Blocklist(terms)
    if head and bl.blocks(head + " "):
        assert bl.blocks(head + " " + rest)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_blocks_prefix_agrees_with_blocks_on_complete_words(text: str) -> None:
    bl = Blocklist(["a", "b c"])
    assert bl.blocks_prefix(text + " ") == bl.blocks(normalize(text))


def test_default_list_loads_and_blocks() -> None:
    bl = Blocklist.default()
    assert 300 <= len(bl) <= 1500
    assert bl == Blocklist.from_files([], default=True)
    assert len(bl.digest()) == 64
    for q in [
        "porn",
        "free porn videos",
        "xxx",
        "hot nude girls",
        "hentai",
        "milf",
        "fuck you",
        "nigger",
        "sex",
        "how to make a bomb at home",
        "two girls one cup",
        "playboy bunnies",
    ]:
        assert bl.blocks(normalize(q)), q
    for q in [
        "weather",
        "cancer",
        "breast cancer",
        "essex",
        "cocktail",
        "scunthorpe",
        "cocktail recipes",
        "middlesex county",
        "moby dick",
        "maine coon",
        "summa cum laude",
        "how to kill fleas",
        "ford escort",
        "cockatoo",
        "sussex",
        "assassin",
        "shitake",
        "class action",
        "analysis",
        "hooker furniture",
        "grape",
        "therapist",
        "titanic",
        "bass fishing",
        "spice girls",
        "honky tonk",
        "penistone",
        "cumming ga",
        "twinkie",
        "arsenal",
        "butterfly",
    ]:
        assert not bl.blocks(normalize(q)), q


def test_default_list_file_is_clean() -> None:
    # every line of the shipped file is a comment, blank, or already normalized and unique
    from importlib.resources import files

    text = (files("indexer") / "data" / "blocklist.txt").read_text(encoding="utf-8")
    assert text.startswith("#")
    terms = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert terms == [normalize(t) for t in terms]
    assert len(terms) == len(set(terms))


def test_mask_finds_the_one_blocked_query_among_many_labels() -> None:
    bl = Blocklist.default()
    queries = [f"query number {i} about weather" for i in range(20_000)]
    queries[123] = "free porn"
    m = bl.mask(queries)
    assert m.sum() == 1 and m[123]


def test_a_blocklist_survives_pickling_and_stays_immutable():
    """A build's tasks on Dask or process workers receive the blocklist pickled."""
    import pickle

    blocklist = Blocklist(["porn"], ["herpes"])
    copy = pickle.loads(pickle.dumps(blocklist))
    assert copy.blocks("free porn videos") and not copy.blocks("weather")
    assert copy.digest() == blocklist.digest() and copy.sensitive_digest() == blocklist.sensitive_digest()
    with pytest.raises(AttributeError):
        copy._blocked = None
