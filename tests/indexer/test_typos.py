"""Typo tolerance (issue 13): distances, variants, synthetic typos, corrected suggestions, and
clean prefixes ranked as before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import indexer
from indexer.blocklist import Blocklist
from indexer.candidates import CandidateConfig
from indexer.evaluate import Pair, evaluate, typo_pairs
from indexer.normalize import normalize_prefix
from indexer.params import BuildParams
from indexer.topk import PrefixTopK
from indexer.train.build import build
from indexer.typos import (
    NEIGHBOURS,
    WordCorrector,
    add_typo,
    max_edits,
    one_edit_variants,
    prefix_distance,
    prefix_distances,
)

FIXTURE = Path(__file__).parent / "data" / "clean_top3.json"
OLD_SOURCES = ("tree", "mpc", "prefix", "word", "session", "transitions", "personal")
TYPO_SOURCES = ("typo_words", "typo_tree")


def osa(a: str, b: str) -> int:
    """Optimal string alignment distance, the textbook table."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def brute_prefix_distance(typed: str, text: str, limit: int) -> int:
    return min(min(osa(typed, text[:j]) for j in range(len(text) + 1)), limit + 1)


texts = st.text(alphabet="abcde ", max_size=9)


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.integers(0, 3))
def test_prefix_distance_is_the_osa_distance_to_the_closest_prefix(typed, text, limit):
    want = brute_prefix_distance(typed, text, limit)
    assert prefix_distance(typed, text, limit) == want
    assert prefix_distances(typed, [text, text + "x"], limit)[0] == want


def test_prefix_distance_examples():
    assert prefix_distance("weathr chan", "weather channel") == 1
    assert prefix_distance("waether", "weather") == 1  # a swap is one edit
    assert prefix_distance("weather", "weather channel") == 0
    assert prefix_distance("wxyz", "weather", 2) == 3


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


def brute_variants(index: PrefixTopK, text: str, whole: bool) -> set[str]:
    out = set()
    for i in range(1, len(text) + 1):
        for c in ALPHABET:
            out.add(text[:i] + c + text[i:])
        if i < len(text):
            out.add(text[:i] + text[i + 1 :])
            for c in ALPHABET:
                out.add(text[:i] + c + text[i + 1 :])
            if i + 1 < len(text):
                out.add(text[:i] + text[i + 1] + text[i] + text[i + 2 :])
    out.discard(text)
    if whole:
        return {v for v in out if index.index(v) >= 0}
    return {v for v in out if index.range(v)[1] > index.range(v)[0]}


def test_one_edit_variants_are_every_variant_the_index_has(small_model):
    rng = np.random.default_rng(0)
    for index in (small_model.words.words, small_model.labels):
        keys = index.keys
        searching, members = PrefixTopK(keys, index.weights), PrefixTopK(keys, index.weights)
        members.keep_members()
        for k in rng.choice(len(keys), 80, replace=False).tolist():
            key = keys[k]
            text = key[: int(rng.integers(2, len(key) + 1))] if len(key) > 2 else key
            if rng.random() < 0.5:
                text = add_typo(text, rng)
            for whole in (False, True):
                assert set(one_edit_variants(index, text, whole)) == brute_variants(index, text, whole), text
            # A whole look-up by set tests finds what the search finds, in the same order.
            for keep_first in (True, False):
                searched = one_edit_variants(searching, text, True, keep_first)
                assert one_edit_variants(members, text, True, keep_first) == searched, text


def test_word_corrector_finds_the_frequent_neighbour():
    counts = {"facebook": 500.0, "facet": 3, "weather": 800, "weathers": 2, "channel": 300, "chance": 40}
    keys = sorted(counts)
    words = PrefixTopK(keys, np.array([counts[k] for k in keys], dtype=float))
    c = WordCorrector(words)
    assert c.correct("facebok") == "facebook"
    assert c.correct("weathr") == "weather"
    assert c.correct("weather") is None  # known and nothing 10x more frequent nearby
    assert c.partials("chsn") == ["chan"]
    assert c.splits("facebookchan") == ["facebook chan"]


@pytest.mark.parametrize("seed", range(5))
def test_add_typo_is_one_slip_after_the_first_character(seed):
    rng = np.random.default_rng(seed)
    for text in ["weather channel", "facebook", "bank of america", "aaaaa", "ab"]:
        for _ in range(40):
            typed = add_typo(text, rng)
            assert typed[0] == text[0]
            assert normalize_prefix(typed) != normalize_prefix(text)
            assert osa(typed, text) == 1, (text, typed)
    assert add_typo("a", rng) == "a"


def test_add_typo_uses_keyboard_neighbours():
    assert set("qwsz") <= set(NEIGHBOURS["a"]) and "p" not in NEIGHBOURS["a"]
    assert "g" in NEIGHBOURS["h"] and "y" in NEIGHBOURS["h"]
    assert [max_edits(n) for n in (3, 4, 7, 8, 20)] == [0, 1, 1, 2, 2]


def test_typo_pairs_are_deterministic_for_a_seed():
    pairs = [Pair("", p, p + " x") for p in ["weather chan", "face", "facebook", "bank of amer", "new york times"]]
    kept, typo = typo_pairs(pairs, seed=3)
    again = typo_pairs(pairs, seed=3)
    assert (kept, typo) == again
    assert kept == [0, 2, 3, 4]  # "face" has fewer than 5 characters
    assert [t.next_query for t in typo] == [pairs[i].next_query for i in kept]
    assert all(t.prefix != pairs[i].prefix for t, i in zip(typo, kept))
    assert typo_pairs(pairs, seed=4)[1] != typo


def test_typo_evaluation_is_deterministic_for_a_seed(small_model):
    keys = small_model.labels.keys
    pairs = [Pair(keys[i - 1], keys[i][: max(5, len(keys[i]) - 2)], keys[i]) for i in range(1, len(keys), 40)]
    runs = []
    for _ in range(2):
        _, typo = typo_pairs(pairs, seed=7)
        result = evaluate(small_model, typo, warmup=0)
        runs.append({k: v for k, v in result["model"].items() if not k.endswith("_ms")})
    assert runs[0] == runs[1]


def typo_prefixes(model: indexer.Model, n: int = 150, seed: int = 0) -> list[tuple[str, str]]:
    """(typo prefix, meant query) of sampled labels of the model."""
    rng = np.random.default_rng(seed)
    keys = [k for k in model.labels.keys if len(k) >= 6]
    return [(add_typo(keys[i][: int(rng.integers(5, len(keys[i]) + 1))], rng), keys[i])
            for i in rng.choice(len(keys), n, replace=False).tolist()]


def test_every_suggestion_is_exact_or_says_it_is_corrected(small_model):
    cases = typo_prefixes(small_model) + [(k, k) for k in small_model.labels.keys[::50]]
    corrected = 0
    for typed, _ in cases:
        norm = normalize_prefix(typed)
        for c in small_model.complete(typed, ["weather"]):
            assert c.corrected == (not c.query.startswith(norm)), (typed, c)
            corrected += c.corrected
    assert corrected  # the typos were corrected somewhere


def test_typos_find_what_was_meant(small_model):
    cases = typo_prefixes(small_model)
    found = sum(meant in [c.query for c in small_model.complete(typed)] for typed, meant in cases)
    without = dataclasses.replace(small_model.generator.config, sources=OLD_SOURCES)
    old = CandidatesSwap(small_model, without)
    with old:
        before = sum(meant in [c.query for c in small_model.complete(typed)] for typed, meant in cases)
    assert found >= 0.5 * len(cases) and found > 3 * before, (found, before)


class CandidatesSwap:
    """Serve ``model`` with another candidate configuration inside a ``with`` block."""

    def __init__(self, model: indexer.Model, config: CandidateConfig):
        self.model, self.config = model, config

    def __enter__(self) -> None:
        self.saved = self.model.generator.config
        self.model.generator.config = self.config

    def __exit__(self, *exc: object) -> None:
        self.model.generator.config = self.saved


def test_corrected_suggestions_keep_the_privacy_rules(small_model):
    for typed, _ in typo_prefixes(small_model, 60):
        blocked = {c.query.split()[0] for c in small_model.complete(typed) if c.corrected}
        if blocked:
            block = Blocklist.from_text("\n".join(blocked))
            assert not [c for c in small_model.complete(typed, blocklist=block) if c.corrected
                        and c.query.split()[0] in blocked]


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory, small_log) -> indexer.Model:
    """The small test model built as before issue 13: no typo sources, no typo keystrokes."""
    out = tmp_path_factory.mktemp("models") / "clean"
    build([small_log], out, BuildParams(workers=1, max_leaf=50, min_users=1, sources=OLD_SOURCES, typo_share=0.0),
          quiet=True)
    return indexer.load(out)


def recorded() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


def top3(model: indexer.Model, case: dict) -> list[str]:
    # The ranking as recorded, before sensitive terms were held back (some cases complete into them).
    blocked = Blocklist(model.blocklist.terms)
    return [c.query for c in model.complete(case["prefix"], [case["prev"]] if case["prev"] else [],
                                            blocklist=blocked)[:3]]


def test_clean_prefixes_rank_as_before_without_the_typo_sources(clean_model):
    cases = recorded()
    assert len(cases) > 100
    assert [top3(clean_model, c) for c in cases] == [c["top3"] for c in cases]


def test_clean_prefixes_keep_their_top3_with_the_typo_sources_on(small_model):
    """The model as built now (typo sources on, its scorer trained with typos too): what was
    shown before stays first; a corrected suggestion may only fill a place that was empty."""
    assert set(TYPO_SOURCES) <= set(small_model.params.sources) and small_model.params.typo_share > 0
    got = [top3(small_model, c) for c in recorded()]
    assert [g[: len(c["top3"])] for g, c in zip(got, recorded())] == [c["top3"] for c in recorded()]


def test_a_pair_is_looked_up_only_where_its_unknown_word_can_change(small_model):
    """A bigram's words are all in the vocabulary, so the pairs found by editing only the
    unknown word or the space beside it are all the pairs there are (and fewer offsets are
    tried)."""
    rng = np.random.default_rng(3)
    words, bigrams = small_model.words.words, small_model.words.bigrams
    corrector = WordCorrector(words, bigrams, cache=0)
    checked = 0
    for k in rng.choice(len(bigrams.keys), 300, replace=False).tolist():
        first, second = bigrams.keys[k].split(" ", 1)
        for unknown in (0, 1):
            pair = [first, second]
            pair[unknown] = add_typo(pair[unknown], rng)
            if words.count(pair[unknown]) or " " in pair[unknown] or len(pair[unknown]) < 2:
                continue
            text = " ".join(pair)
            assert corrector.pairs(text, True, unknown) == corrector.pairs(text, True), text
            checked += 1
    assert checked > 200
