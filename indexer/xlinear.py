"""XR-Linear rankers on the label tree: training (teacher-forced OVR SVMs) and beam search.

``W`` is a CSC matrix of shape (n_features + 1, n_edges): column ``e`` scores edge ``e`` of
the tree (a child node, or a label under a leaf); the last row is the bias, matched by an
implicit 1 in the input. A child's score is its parent's times exp(-max(0, 1 - w.x)^3).
"""

from __future__ import annotations

import multiprocessing
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from .tree import LabelTree

# Triplets (feature row, edge column, weight) of the rankers of some nodes.
Triplets = tuple[np.ndarray, np.ndarray, np.ndarray]

# Training state shared with forked workers (set before the pool starts, read-only there).
_SHARED: dict[str, Any] = {}
# Chunks of nodes are packed up to this many (rows x edges) units of work.
_CHUNK_COST = 2_000_000


def _ragged_positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return shift + np.arange(total, dtype=np.int64)


def _rows_per_node(tree: LabelTree, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every node, the rows whose label lies under it and the edge each one takes.

    Returns ``(offsets, rows, edges)``: node ``k``'s rows are ``rows[offsets[k]:offsets[k+1]]``
    and ``edges`` holds the matching global edge ids.
    """
    n_rows = len(y)
    row = np.arange(n_rows, dtype=np.int64)
    node = tree.leaf_of_label[y].astype(np.int64)
    edge = tree.label_edge[y]
    parts_row, parts_node, parts_edge = [], [], []
    while len(row):
        parts_row.append(row)
        parts_node.append(node)
        parts_edge.append(edge)
        up = node != 0
        row, edge, node = row[up], tree.parent_edge[node[up]], tree.parent[node[up]].astype(np.int64)
    all_node = np.concatenate(parts_node)
    order = np.argsort(all_node, kind="stable")
    counts = np.bincount(all_node, minlength=tree.n_nodes)
    offsets = np.zeros(tree.n_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.concatenate(parts_row)[order], np.concatenate(parts_edge)[order]


def _fit_node(
    X: sp.csr_matrix, target: np.ndarray, n_edges: int, C: float, prune: float, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OVR squared-hinge SVMs of one node's edges on its rows (``target`` = local edge).

    Returns (feature ids, local edges, weights) of the pruned nonzero weights and the bias
    of every edge.
    """
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0, dtype=np.float32)
    bias = np.full(n_edges, -1.0)
    classes = np.unique(target)
    if n_edges == 1:
        return empty_i, empty_i, empty_f, np.ones(1)
    if len(classes) == 0:
        return empty_i, empty_i, empty_f, np.zeros(n_edges)
    if len(classes) == 1:
        bias[classes[0]] = 1.0
        return empty_i, empty_i, empty_f, bias
    # Fit on the columns these rows use only: the coefficient matrix stays small.
    cols, local = np.unique(X.indices, return_inverse=True)
    Xc = sp.csr_matrix((X.data, local.ravel(), X.indptr), shape=(X.shape[0], len(cols)))
    svm = LinearSVC(C=C, loss="squared_hinge", dual=True, tol=tol, max_iter=max_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(Xc, target)
    coef = svm.coef_
    intercept = svm.intercept_
    if len(classes) == 2:  # one binary model: classes[1] is the positive side
        coef = np.vstack((-coef[0], coef[0]))
        intercept = np.array([-intercept[0], intercept[0]])
    bias[classes] = intercept
    keep_c, keep_f = np.nonzero(np.abs(coef) >= prune)
    return cols[keep_f].astype(np.int64), classes[keep_c].astype(np.int64), coef[keep_c, keep_f].astype(np.float32), bias


def _fit_chunk(nodes: Sequence[int]) -> tuple[int, Triplets]:
    """Rankers of several nodes, from the shared training state, as W triplets."""
    s = _SHARED
    tree: LabelTree = s["tree"]
    X: sp.csr_matrix = s["X"]
    n_features = X.shape[1]
    feats, edges, vals = [], [], []
    for k in nodes:
        lo, hi = s["offsets"][k], s["offsets"][k + 1]
        start = int(tree.edge_start[k])
        n_edges = int(tree.edge_end[k]) - start
        rows = s["rows"][lo:hi]
        target = s["edges"][lo:hi] - start
        f, e, v, b = _fit_node(X[rows], target, n_edges, s["C"], s["prune"], s["tol"], s["max_iter"])
        nz = np.flatnonzero(b)
        feats += [f, np.full(len(nz), n_features, dtype=np.int64)]
        edges += [e + start, nz + start]
        vals += [v, b[nz].astype(np.float32)]
    return len(nodes), (np.concatenate(feats), np.concatenate(edges), np.concatenate(vals))


def _chunks(tree: LabelTree, offsets: np.ndarray) -> list[list[int]]:
    """Nodes grouped into chunks of similar work, biggest first (for load balance)."""
    n_edges = (tree.edge_end - tree.edge_start).astype(np.int64)
    cost = np.diff(offsets) * np.maximum(n_edges, 1) + 1_000
    chunks: list[list[int]] = []
    current: list[int] = []
    acc = 0
    for k in np.argsort(-cost, kind="stable").tolist():
        current.append(k)
        acc += int(cost[k])
        if acc >= _CHUNK_COST:
            chunks.append(current)
            current, acc = [], 0
    if current:
        chunks.append(current)
    return chunks


def train_rankers(
    tree: LabelTree,
    X: sp.csr_matrix,
    y: np.ndarray,
    C: float = 1.0,
    prune: float = 0.1,
    workers: int = 1,
    progress: Callable[[int], Any] | None = None,
    tol: float = 0.1,
    max_iter: int = 100,
) -> sp.csc_matrix:
    """Train every node's rankers; returns W, CSC (n_features + 1, n_edges).

    Each node (internal or leaf) gets one-vs-rest squared-hinge linear SVMs over its edges,
    trained on the rows whose label ``y`` lies under it (teacher-forced negatives); weights
    below ``prune`` in magnitude are dropped, biases kept. Nodes train in parallel on
    ``workers`` forked processes. ``progress(n)`` is called with the number of nodes just
    finished (an increment, as ``tqdm.update`` takes).
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= tree.n_labels):
        raise ValueError(f"label ids must lie in [0, {tree.n_labels}), got [{y.min()}, {y.max()}]")
    if C <= 0 or prune < 0 or workers < 1:
        raise ValueError(f"need C > 0, prune >= 0, workers >= 1; got C={C}, prune={prune}, workers={workers}")
    offsets, rows, edges = _rows_per_node(tree, y)
    chunks = _chunks(tree, offsets)
    _SHARED.update(
        tree=tree, X=X, offsets=offsets, rows=rows, edges=edges, C=C, prune=prune, tol=tol, max_iter=max_iter
    )
    parts: list[Triplets] = []
    try:
        if workers == 1:
            for chunk in chunks:
                done, trip = _fit_chunk(chunk)
                parts.append(trip)
                if progress is not None:
                    progress(done)
        else:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_fit_chunk, chunk) for chunk in chunks]
                for fut in as_completed(futures):
                    done, trip = fut.result()
                    parts.append(trip)
                    if progress is not None:
                        progress(done)
    finally:
        _SHARED.clear()
    feats = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    shape = (X.shape[1] + 1, tree.n_edges)
    W = sp.csc_matrix((vals, (feats, cols)), shape=shape, dtype=np.float32)
    W.sort_indices()
    return W


_LOCAL = threading.local()


def _scratch(size: int) -> np.ndarray:
    """This thread's dense input buffer (zeros, bias slot 1) of ``size`` entries."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or len(buf) != size:
        buf = np.zeros(size, dtype=np.float32)
        buf[-1] = 1.0
        _LOCAL.buf = buf
    return buf


def beam_search(
    tree: LabelTree,
    W: sp.csc_matrix,
    x_idx: np.ndarray,
    x_val: np.ndarray,
    beam: int = 10,
    label_range: tuple[int, int] | None = None,
    topk: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``topk`` labels for input ``x`` (sparse: indices, values), scores descending.

    Keeps the ``beam`` best nodes per level; labels of expanded leaves go to a pool. With
    ``label_range=(lo, hi)`` only nodes holding some label id in [lo, hi) are scored and only
    labels in it are returned. Thread-safe: each thread has its own scratch buffer.
    """
    lo, hi = label_range if label_range is not None else (0, tree.n_labels)
    if hi <= lo or tree.node_hi[0] <= lo or tree.node_lo[0] >= hi:
        return np.zeros(0, dtype=np.int32), np.zeros(0)
    indptr, indices, data = W.indptr, W.indices, W.data
    xd = _scratch(W.shape[0])
    xd[x_idx] = x_val
    try:
        pool_labels: list[np.ndarray] = []
        pool_scores: list[np.ndarray] = []
        nodes = np.zeros(1, dtype=np.int64)
        scores = np.ones(1)
        while len(nodes):
            starts = tree.edge_start[nodes]
            lens = tree.edge_end[nodes] - starts
            edges = _ragged_positions(starts, lens)
            parent = np.repeat(scores, lens)
            if label_range is not None:
                ok = (tree.edge_lo[edges] < hi) & (tree.edge_hi[edges] > lo)
                edges, parent = edges[ok], parent[ok]
            # w.x of every candidate edge at once: gather the columns' nonzeros.
            col_start = indptr[edges]
            col_len = indptr[edges + 1] - col_start
            pos = _ragged_positions(col_start, col_len)
            prod = data[pos] * xd[indices[pos]]
            wx = np.bincount(np.repeat(np.arange(len(edges)), col_len), weights=prod, minlength=len(edges))
            s = parent * np.exp(-(np.maximum(0.0, 1.0 - wx) ** 3))
            is_label = tree.edge_is_label[edges]
            child = tree.edge_child[edges]
            if is_label.any():
                pool_labels.append(child[is_label])
                pool_scores.append(s[is_label])
            nodes, scores = child[~is_label].astype(np.int64), s[~is_label]
            if len(nodes) > beam:
                best = np.argpartition(-scores, beam - 1)[:beam]
                nodes, scores = nodes[best], scores[best]
    finally:
        xd[x_idx] = 0.0
    if not pool_labels:
        return np.zeros(0, dtype=np.int32), np.zeros(0)
    labels = np.concatenate(pool_labels)
    final = np.concatenate(pool_scores)
    if len(labels) > topk:
        best = np.argpartition(-final, topk - 1)[:topk]
        labels, final = labels[best], final[best]
    order = np.lexsort((labels, -final))
    return labels[order], final[order]
