import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from indexer.topk import PrefixTopK


def brute_force(keys, weights, prefix, k):
    items = [(-w, i) for i, (key, w) in enumerate(zip(keys, weights)) if key.startswith(prefix)]
    return [i for _, i in sorted(items)[:k]]


@given(
    st.dictionaries(st.text("abc ", min_size=1, max_size=5), st.integers(1, 5), min_size=1, max_size=60),
    st.text("abc ", max_size=3),
    st.integers(1, 12),
)
def test_top_matches_brute_force(counts, prefix, k):
    keys = sorted(counts)
    weights = np.array([counts[key] for key in keys], dtype=float)
    index = PrefixTopK(keys, weights)
    assert index.top(prefix, k) == brute_force(keys, weights, prefix, k)
    assert index.total(prefix) == sum(w for key, w in zip(keys, weights) if key.startswith(prefix))


def test_count_and_index_of_absent_keys():
    index = PrefixTopK(["a", "b"], np.array([2.0, 3.0]))
    assert index.count("b") == 3.0
    assert index.count("c") == 0.0
    assert index.index("ab") == -1
