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


@given(
    st.dictionaries(st.text("abc ", min_size=1, max_size=5), st.integers(1, 5), min_size=1, max_size=60),
    st.lists(st.text("abc ", max_size=5), max_size=20),
)
def test_indices_and_counts_are_those_of_each_key(counts, asked):
    keys = sorted(counts)
    index = PrefixTopK(keys, np.array([counts[key] for key in keys], dtype=float))
    asked = asked + keys[:5] + asked  # asked again: answered from memory
    assert index.indices(asked).tolist() == [index.index(key) for key in asked]
    assert index.counts(asked).tolist() == [index.count(key) for key in asked]
    # Keeping the keys as a set changes how an absent key is told, not the answers.
    kept = PrefixTopK(keys, index.weights)
    kept.keep_members()
    assert [kept.index(key) for key in asked] == [keys.index(key) if key in counts else -1 for key in asked]
    assert kept.count_list(asked, "a") == index.count_list(asked, "a")
    assert kept.indices(asked).tolist() == index.indices(asked).tolist()
    absent = [key for key in asked if key not in counts]
    assert not set(absent) & (set(kept._count_memo) | set(kept._memo))  # told by the set, not remembered


@given(
    st.dictionaries(st.text("abc ", min_size=1, max_size=5), st.integers(1, 5), min_size=1, max_size=60),
    st.text("abc ", max_size=3),
)
def test_children_are_the_next_characters_and_where_their_keys_start(counts, prefix):
    keys = sorted(counts)
    index = PrefixTopK(keys, np.array([counts[key] for key in keys], dtype=float))
    for _ in range(2):  # computed, then remembered
        lo, hi, chars, starts = index.children(prefix)
        assert (lo, hi) == index.range(prefix)
        under = [key for key in keys if key.startswith(prefix) and len(key) > len(prefix)]
        assert chars == "".join(sorted({key[len(prefix)] for key in under}))
        assert list(starts) == [index.range(prefix + c)[0] for c in chars] + [hi]


def test_indices_of_an_empty_index():
    index = PrefixTopK([], np.zeros(0))
    assert index.indices(["a"]).tolist() == [-1]
    assert index.counts(["a"]).tolist() == [0.0]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=3000), st.integers(1, 25), st.data())
def test_top_range_is_the_heaviest_first_ties_to_the_first_key(weights, k, data):
    index = PrefixTopK([f"{i:05d}" for i in range(len(weights))], np.array(weights, dtype=float))
    lo = data.draw(st.integers(0, len(weights) - 1))
    hi = data.draw(st.integers(lo, len(weights)))
    expected = sorted(range(lo, hi), key=lambda i: (-weights[i], i))[:k]
    assert index.top_range(lo, hi, k) == expected


def test_top_range_sorts_partitions_or_walks_the_heap_alike():
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 20, 5000).astype(float)  # many ties
    index = PrefixTopK([f"{i:05d}" for i in range(len(weights))], weights)
    for lo, hi, k in ((10, 200, 7), (0, 4000, 10), (5, 5000, 2), (100, 4100, 1)):  # sort, partition, heap
        assert index.top_range(lo, hi, k) == sorted(range(lo, hi), key=lambda i: (-weights[i], i))[:k]


@given(
    st.dictionaries(st.text("abc ", min_size=1, max_size=5), st.integers(1, 5), min_size=1, max_size=60),
    st.lists(st.text("abc ", max_size=5), max_size=20),
    st.text("abc ", max_size=2),
)
def test_count_list_within_a_prefix_is_count_of_each_key(counts, asked, within):
    keys = sorted(counts)
    index = PrefixTopK(keys, np.array([counts[key] for key in keys], dtype=float))
    assert index.count_list(asked, within) == [index.count(key) for key in asked]
    assert index.count_list(asked) == [index.count(key) for key in asked]


@given(
    st.dictionaries(st.text("abc ", min_size=1, max_size=5), st.integers(1, 5), min_size=1, max_size=60),
    st.integers(0, 40),
)
def test_heaviest_prefixes_are_those_of_most_weight_in_key_order_on_ties(counts, n):
    keys = sorted(counts)
    index = PrefixTopK(keys, np.array([counts[key] for key in keys], dtype=float))
    totals: dict[str, float] = {}
    for key in keys:
        for end in range(1, len(key) + 1):
            totals[key[:end]] = totals.get(key[:end], 0.0) + counts[key]
    first = {p: next(i for i, key in enumerate(keys) if key.startswith(p)) for p in totals}
    # Equal weights: the prefix whose keys come first; a prefix before its extensions.
    expected = sorted(totals, key=lambda p: (-totals[p], first[p], len(p)))[:n]
    assert index.heaviest_prefixes(n) == expected
