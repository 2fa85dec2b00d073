from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.tfidf import PrefixFeaturizer
from indexer.train.cluster import build_label_tree
from indexer.tree import LabelTree


def random_labels(n: int, seed: int = 0, alphabet: str = "abcd e") -> list[str]:
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < n:
        k = int(rng.integers(1, 9))
        text = "".join(rng.choice(list(alphabet), size=k))
        text = " ".join(text.split())
        if text:
            out.add(text)
    return sorted(out)


def embeddings(labels: list[str]):
    return PrefixFeaturizer().fit(labels, []).embed(labels)


def labels_under(tree: LabelTree) -> list[set[int]]:
    """Brute force: the labels under every node, by walking from each label's leaf up."""
    under: list[set[int]] = [set() for _ in range(tree.n_nodes)]
    for label, node in enumerate(tree.leaf_of_label.tolist()):
        while node >= 0:
            under[node].add(label)
            node = int(tree.parent[node])
    return under


def check_invariants(tree: LabelTree, labels: list[str], trie_depth: int, max_leaf: int, branching: int):
    n = len(labels)
    leaf_edges = np.concatenate([tree.children(k) for k in np.flatnonzero(tree.is_leaf)])
    assert sorted(leaf_edges.tolist()) == list(range(n)), "every label in exactly one leaf"
    for k in np.flatnonzero(tree.is_leaf):
        assert 1 <= len(tree.children(k)) <= max_leaf
        assert (tree.leaf_of_label[tree.children(k)] == k).all()
    under = labels_under(tree)
    for k in range(tree.n_nodes):
        assert under[k], f"node {k} holds no label"
        assert tree.node_lo[k] == min(under[k]) and tree.node_hi[k] == max(under[k]) + 1
        d = int(tree.depth[k])
        if d <= trie_depth:
            assert len({labels[i][:d] for i in under[k]}) == 1, f"trie node {k} mixes prefixes"
        kids = tree.children(k)
        if not tree.is_leaf[k]:
            assert (kids > k).all(), "children are numbered after their parent"
            assert (tree.depth[kids] == d + 1).all()
            if d >= trie_depth:
                assert len(kids) <= branching
    assert (np.diff(tree.depth) >= 0).all(), "breadth-first numbering"
    assert tree.edge_start[0] == 0 and (tree.edge_start[1:] == tree.edge_end[:-1]).all()


@pytest.mark.parametrize("trie_depth", [0, 1, 3])
def test_tree_invariants_hold_for_trie_and_cluster_levels(trie_depth):
    labels = random_labels(600, alphabet="ab e")
    tree = build_label_tree(labels, embeddings(labels), trie_depth=trie_depth, max_leaf=10, branching=4)
    check_invariants(tree, labels, trie_depth, max_leaf=10, branching=4)
    assert tree.max_depth > trie_depth


def test_pure_clustering_is_balanced():
    labels = random_labels(512)
    tree = build_label_tree(labels, embeddings(labels), trie_depth=0, max_leaf=16, branching=16)
    sizes = (tree.edge_end - tree.edge_start)[tree.is_leaf]
    assert sizes.min() >= 8 and sizes.max() <= 16
    assert len(tree.children(0)) == 16


def test_a_label_ending_at_a_trie_node_gets_its_own_leaf():
    labels = sorted(["ab", "abc", "abd", "abe", "abf", "b"])
    tree = build_label_tree(labels, embeddings(labels), trie_depth=3, max_leaf=2)
    leaf = tree.leaf_of_label[labels.index("ab")]
    assert tree.children(leaf).tolist() == [labels.index("ab")]
    assert tree.depth[leaf] == 3  # root -> "a" -> "ab" -> the labels ending there


def test_few_labels_make_the_root_a_leaf():
    labels = ["a", "b", "c"]
    tree = build_label_tree(labels, embeddings(labels), max_leaf=5)
    assert tree.n_nodes == 1 and tree.is_leaf[0] and tree.n_leaves == 1
    assert tree.children(0).tolist() == [0, 1, 2]


def test_same_seed_same_tree_and_round_trip_through_npz():
    labels = random_labels(300, seed=3)
    emb = embeddings(labels)
    a = build_label_tree(labels, emb, trie_depth=1, max_leaf=8, seed=5)
    b = build_label_tree(labels, emb, trie_depth=1, max_leaf=8, seed=5)
    buf = io.BytesIO()
    np.savez(buf, **a.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as arrays:
        c = LabelTree.from_arrays(arrays)
    for name, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, getattr(b, name))
        np.testing.assert_array_equal(value, getattr(c, name))
    np.testing.assert_array_equal(a.label_edge, c.label_edge)


def test_unsorted_or_duplicate_labels_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        build_label_tree(["b", "a"], embeddings(["a", "b"]))
    with pytest.raises(ValueError, match="sorted"):
        build_label_tree(["a", "a"], embeddings(["a", "b"]))
    with pytest.raises(ValueError, match="branching"):
        build_label_tree(["a", "b"], embeddings(["a", "b"]), branching=6)


@settings(max_examples=25, deadline=None)
@given(
    st.sets(st.text("ab c", min_size=1, max_size=6), min_size=1, max_size=80),
    st.integers(0, 3),
    st.integers(1, 6),
)
def test_invariants_hold_for_any_label_set(label_set, trie_depth, max_leaf):
    labels = sorted(label_set)
    tree = build_label_tree(labels, embeddings(labels), trie_depth=trie_depth, max_leaf=max_leaf, branching=2)
    check_invariants(tree, labels, trie_depth, max_leaf, branching=2)
