from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.tfidf import NotFittedError, PrefixFeaturizer, position_weights

LABELS = sorted(
    {"nike", "nike shoes", "nikon camera", "new york times", "new york", "news", "kids games", "ikea"}
)
PREVS = ["", "running shoes", "camera", "new york", "", "games for kids", "shoes"]


def fitted(**params) -> PrefixFeaturizer:
    return PrefixFeaturizer(**params).fit(LABELS, PREVS)


def test_nik_with_string_weighting_counts_each_ngram_by_its_start_offset():
    got = position_weights("nik", "string", 3)
    want = {"n": 1.0, "i": 1 / 2, "k": 1 / 3, "ni": 1.0, "ik": 1 / 2, "nik": 1.0}
    assert got.keys() == want.keys()
    for gram, w in want.items():
        assert got[gram] == pytest.approx(w)


def test_word_weighting_gives_every_word_start_full_weight():
    got = position_weights("ab cd", "word", 2)
    assert got["a"] == got["ab"] == got["c"] == got["cd"] == 1.0
    assert got["b"] == got["b "] == pytest.approx(1 / 2)
    assert got[" "] == got[" c"] == pytest.approx(1 / 3)
    assert got["d"] == pytest.approx(1 / 2)


def test_no_weighting_counts_repeated_ngrams():
    assert position_weights("aaa", "none", 2) == {"a": 3.0, "aa": 2.0}


def test_prefix_block_is_position_weights_times_smoothed_idf_normalized():
    f = fitted(prev_weight=0.0)
    raw = position_weights("nik", "string", 3)
    n = len(LABELS)
    want = {}
    for gram, w in raw.items():
        df = sum(gram in label for label in LABELS)
        want[f.gram_vocabulary_[gram]] = w * (math.log((1 + n) / (1 + df)) + 1)
    norm = math.sqrt(sum(v * v for v in want.values()))
    idx, val = f.transform_one("nik", "running shoes")
    assert idx.tolist() == sorted(want)
    np.testing.assert_allclose(val, [want[i] / norm for i in sorted(want)], rtol=1e-6)


def test_previous_query_block_has_prev_weight_relative_to_prefix_block():
    f = fitted(prev_weight=0.5)
    idx, val = f.transform_one("ni", "running shoes")
    in_prev = idx >= f.n_prefix_features_
    assert in_prev.any() and (~in_prev).any()
    assert np.linalg.norm(val[in_prev]) / np.linalg.norm(val[~in_prev]) == pytest.approx(0.5, rel=1e-5)
    assert np.linalg.norm(val) == pytest.approx(1.0, rel=1e-6)


def test_unknown_ngrams_and_words_are_ignored_and_empty_input_is_zero():
    f = fitted()
    idx, val = f.transform_one("qqq", "zebra")
    assert len(idx) == 0 and len(val) == 0
    assert f.transform([""], [""]).nnz == 0
    assert f.transform(["n"], [""]).shape == (1, f.n_features_)


def test_rows_of_transform_have_unit_length():
    f = fitted()
    X = f.transform(["ni", "new y", "k"], ["shoes", "", "games"])
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)).A1, 1.0, rtol=1e-6)
    assert X.dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.text("nikew yorsa", max_size=8), st.text("shoe camr ", max_size=12)), max_size=8)
)
def test_transform_one_equals_the_matching_row_of_transform(pairs):
    f = fitted(weighting="word", prev_weight=0.7)
    prefixes = [p for p, _ in pairs]
    prevs = [q for _, q in pairs]
    X = f.transform(prefixes, prevs)
    for i, (p, q) in enumerate(pairs):
        idx, val = f.transform_one(p, q)
        row = X[i]
        assert idx.dtype == np.int32 and val.dtype == np.float32
        assert idx.tolist() == row.indices.tolist()
        assert val.tolist() == row.data.tolist()


def test_embed_is_the_prefix_block_of_each_full_text():
    f = fitted()
    E = f.embed(LABELS)
    assert E.shape == (len(LABELS), f.n_prefix_features_)
    for i, label in enumerate(LABELS):
        idx, val = f.transform_one(label, "")
        assert E[i].indices.tolist() == idx.tolist()
        np.testing.assert_array_equal(E[i].data, val)


def test_min_df_drops_rare_ngrams():
    f = fitted(min_df=2)
    assert "ike" in f.gram_vocabulary_  # nike, nike shoes
    assert "kea" not in f.gram_vocabulary_  # ikea only


def test_round_trip_through_npz_transforms_identically():
    f = fitted(weighting="word", prev_weight=0.3, ngram_max=2)
    buf = io.BytesIO()
    np.savez(buf, **f.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as arrays:
        g = PrefixFeaturizer.from_arrays(arrays, f.get_params())
    a = f.transform(["ne", "nik o", " k"], ["camera", "", "kids"])
    b = g.transform(["ne", "nik o", " k"], ["camera", "", "kids"])
    assert (a != b).nnz == 0
    assert g.n_features_ == f.n_features_


def test_bad_parameters_and_unfitted_use_raise_clear_errors():
    with pytest.raises(ValueError, match="'letters'"):
        PrefixFeaturizer(weighting="letters").fit(LABELS, PREVS)
    with pytest.raises(ValueError, match="ngram_max"):
        PrefixFeaturizer(ngram_max=0).fit(LABELS, PREVS)
    with pytest.raises(NotFittedError):
        PrefixFeaturizer().transform(["a"], [""])
    with pytest.raises(ValueError, match="differ in length"):
        fitted().transform(["a", "b"], [""])
