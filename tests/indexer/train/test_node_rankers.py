from __future__ import annotations

import io
from bisect import bisect_left
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.search import SearchIndex, beam_search
from indexer.tfidf import PrefixFeaturizer
from indexer.train.cluster import build_label_tree
from indexer.train.node_rankers import train_rankers
from indexer.tree import LabelTree
from tests.support import make_data


@pytest.fixture(scope="module")
def model():
    labels, prefixes, prevs, y = make_data()
    f = PrefixFeaturizer().fit(labels, prevs)
    tree = build_label_tree(labels, f.embed(labels), trie_depth=1, max_leaf=6, branching=4)
    X = f.transform(prefixes, prevs)
    W = train_rankers(tree, X, y, C=1.0)
    return labels, f, tree, X, y, W, prefixes


def label_range(labels: list[str], prefix: str) -> tuple[int, int]:
    return bisect_left(labels, prefix), bisect_left(labels, prefix + "\U0010ffff")


def exhaustive_scores(tree: LabelTree, W: sp.csc_matrix, x: np.ndarray) -> np.ndarray:
    """Brute force: every label's score, the product of its path's edge factors."""
    wx = np.append(x, 1.0) @ W.toarray()
    factor = np.exp(-(np.maximum(0.0, 1.0 - wx) ** 3))
    scores = np.empty(tree.n_labels)
    for label in range(tree.n_labels):
        s, edge, node = 1.0, tree.label_edge[label], tree.leaf_of_label[label]
        while edge >= 0:
            s *= factor[edge]
            edge, node = tree.parent_edge[node], tree.parent[node]
        scores[label] = s
    return scores


def test_weights_have_one_column_per_edge_a_bias_row_and_no_small_weights(model):
    labels, f, tree, X, y, W, _ = model
    assert W.shape == (f.n_features_ + 1, tree.n_edges)
    assert sp.issparse(W) and W.format == "csc"
    body = W[:-1].tocoo()
    assert (np.abs(body.data) >= 0.1).all()
    assert W[-1].nnz > 0.9 * tree.n_edges


def test_trained_model_ranks_the_true_label_first_on_its_training_prefixes(model):
    labels, f, tree, X, y, W, prefixes = model
    top1 = []
    for i in range(0, len(y), 3):
        ids, _ = beam_search(tree, W, X[i].indices, X[i].data, beam=10, topk=10)
        top1.append(len(ids) > 0 and ids[0] == y[i])
    assert np.mean(top1) > 0.7


def test_beam_search_with_a_wide_beam_matches_exhaustive_scoring(model):
    labels, f, tree, X, y, W, _ = model
    for i in (0, 11, 40):
        x = X[i].toarray().ravel()
        want = exhaustive_scores(tree, W, x)
        ids, scores = beam_search(tree, W, X[i].indices, X[i].data, beam=tree.n_nodes, topk=5)
        np.testing.assert_allclose(scores, np.sort(want)[::-1][:5], rtol=1e-5)
        np.testing.assert_allclose(want[ids], scores, rtol=1e-5)
        assert (np.diff(scores) <= 0).all()


def test_label_range_restricts_results_to_labels_with_the_prefix(model):
    labels, f, tree, X, y, W, prefixes = model
    for prefix in ("ka", "lo", "mika", "t", "su"):
        lo, hi = label_range(labels, prefix)
        idx, val = f.transform_one(prefix, "")
        ids, scores = beam_search(tree, W, idx, val, label_range=(lo, hi), topk=10)
        assert len(ids) == min(10, hi - lo)
        assert all(labels[i].startswith(prefix) for i in ids)
    ids, _ = beam_search(tree, W, idx, val, label_range=(5, 5))
    assert len(ids) == 0


def test_round_trip_of_tree_and_weights_gives_identical_rankings(model):
    labels, f, tree, X, y, W, _ = model
    buf_t, buf_w = io.BytesIO(), io.BytesIO()
    np.savez(buf_t, **tree.to_arrays())
    sp.save_npz(buf_w, W)
    buf_t.seek(0)
    buf_w.seek(0)
    tree2 = LabelTree.from_arrays(np.load(buf_t))
    W2 = sp.load_npz(buf_w).tocsc()
    for i in range(0, len(y), 17):
        a = beam_search(tree, W, X[i].indices, X[i].data)
        b = beam_search(tree2, W2, X[i].indices, X[i].data)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_search_index_and_weights_give_the_same_answer_from_many_threads(model):
    labels, f, tree, X, y, W, _ = model
    index = SearchIndex.build(tree, W)
    rows = list(range(0, len(y), 5))
    serial = [beam_search(tree, index, X[i].indices, X[i].data)[0].tolist() for i in rows]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda i: beam_search(tree, W, X[i].indices, X[i].data)[0].tolist(), rows))
    assert threaded == serial


def test_node_with_a_single_class_gets_a_positive_bias_and_no_weights():
    labels = ["aa", "ab", "ac", "ba", "bb"]
    f = PrefixFeaturizer().fit(labels, [])
    tree = build_label_tree(labels, f.embed(labels), trie_depth=1, max_leaf=3)
    X = f.transform(["a", "aa", "b", "ba"], [""] * 4)
    y = np.array([0, 0, 3, 3])  # leaf "a*" and leaf "b*" each see one label only
    W = train_rankers(tree, X, y)
    for label, other in ((0, 1), (3, 4)):
        e, o = tree.label_edge[label], tree.label_edge[other]
        assert W[:-1, e].nnz == 0 and W[-1, e] == pytest.approx(1.0)
        assert W[-1, o] == pytest.approx(-1.0)


def test_parallel_training_reports_progress_and_ranks_like_serial_training(model):
    labels, f, tree, X, y, W, _ = model
    seen: list[int] = []
    W2 = train_rankers(tree, X, y, workers=2, progress=seen.append)
    assert sum(seen) == tree.n_nodes
    agree = [
        beam_search(tree, W, X[i].indices, X[i].data)[0][0]
        == beam_search(tree, W2, X[i].indices, X[i].data)[0][0]
        for i in range(0, len(y), 4)
    ]
    assert np.mean(agree) > 0.9


def test_bad_inputs_raise_clear_errors(model):
    labels, f, tree, X, y, W, _ = model
    with pytest.raises(ValueError, match="rows"):
        train_rankers(tree, X, y[:-1])
    with pytest.raises(ValueError, match="beam"):
        beam_search(tree, W, X[0].indices, X[0].data, beam=0)
    with pytest.raises(ValueError, match="columns"):
        SearchIndex.build(tree, W[:, :-1])


def test_a_weighted_row_trains_like_its_duplicates(model):
    labels, f, tree, X, y, _, _ = model
    twice = np.arange(0, len(y), 3)
    rows = np.concatenate([np.arange(len(y)), twice])
    W_dup = train_rankers(tree, X[rows], y[rows], prune=0.0, tol=1e-6, max_iter=10_000)
    weight = np.ones(len(y))
    weight[twice] = 2.0
    W_w = train_rankers(tree, X, y, prune=0.0, tol=1e-6, max_iter=10_000, sample_weight=weight)
    assert np.allclose(W_dup.toarray(), W_w.toarray(), atol=1e-3)


def test_trie_nodes_do_not_train_on_rows_whose_prefix_decides_the_branch():
    labels, prefixes, prevs, y = make_data()
    f = PrefixFeaturizer().fit(labels, prevs)
    tree = build_label_tree(labels, f.embed(labels), trie_depth=2, max_leaf=6, branching=4)
    X = f.transform(prefixes, prevs)
    lengths = np.array([len(p) for p in prefixes])
    assert lengths.min() > 2
    W = train_rankers(tree, X, y, prefix_len=lengths, trie_depth=2).tocsc()
    feature_rows = W.shape[0] - 1
    owner = tree.edge_node
    trie_edges = np.flatnonzero((tree.depth[owner] < 2) & ~tree.is_leaf[owner])
    deeper = np.flatnonzero(tree.depth[owner] >= 2)
    assert len(trie_edges) and len(deeper)
    nnz_features = np.diff(W[:feature_rows].tocsc().indptr)
    assert nnz_features[trie_edges].sum() == 0
    assert nnz_features[deeper].sum() > 0
