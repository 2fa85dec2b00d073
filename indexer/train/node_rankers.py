"""Training the XR-Linear node rankers: teacher-forced one-vs-rest squared-hinge SVMs.

The result is ``W``, a CSC matrix of shape (n_features + 1, n_edges) that
:mod:`indexer.search` searches: column ``e`` scores edge ``e`` of the tree, the last row is
the bias. See docs/METHOD.md.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ..tree import LabelTree
from .executors import Executor, LocalExecutor

# Triplets (feature row, edge column, weight) of the rankers of some nodes.
Triplets = tuple[np.ndarray, np.ndarray, np.ndarray]

# Chunks of nodes are packed up to this many (rows x edges) units of work.
_CHUNK_COST = 2_000_000
_FIT_LOCK = threading.Lock()


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


def _drop_decided_rows(
    tree: LabelTree,
    offsets: np.ndarray,
    rows: np.ndarray,
    edges: np.ndarray,
    prefix_len: np.ndarray,
    trie_depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove, at each branching trie node, the rows whose prefix is longer than its depth."""
    counts = np.diff(offsets)
    node = np.repeat(np.arange(tree.n_nodes), counts)
    trie_branch = (tree.depth < trie_depth) & ~tree.is_leaf
    keep = ~(trie_branch[node] & (prefix_len[rows] > tree.depth[node]))
    new_offsets = np.zeros_like(offsets)
    np.cumsum(np.bincount(node[keep], minlength=tree.n_nodes), out=new_offsets[1:])
    return new_offsets, rows[keep], edges[keep]


def _fit_node(
    X: sp.csr_matrix,
    target: np.ndarray,
    weight: np.ndarray | None,
    n_edges: int,
    want: np.ndarray | None,
    C: float,
    prune: float,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OVR squared-hinge SVMs of one node's edges on its rows (``target`` = local edge).

    Only the edges in ``want`` (all if None) are fitted: the other classes merge into one
    "rest" class, which leaves each wanted one-vs-rest problem unchanged. Returns
    (feature ids, local edges, weights) of the pruned nonzero weights, and the bias of every
    edge (0 for edges not wanted).
    """
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0, dtype=np.float32)
    wanted = np.ones(n_edges, dtype=bool) if want is None else np.isin(np.arange(n_edges), want)
    bias = np.where(wanted, -1.0, 0.0)
    classes = np.unique(target)
    if n_edges == 1:
        return empty_i, empty_i, empty_f, wanted.astype(np.float64)
    if len(classes) == 0:
        return empty_i, empty_i, empty_f, np.zeros(n_edges)
    if len(classes) == 1:
        bias[classes[0]] = 1.0 if wanted[classes[0]] else 0.0
        return empty_i, empty_i, empty_f, bias
    if want is not None:
        target = np.where(wanted[target], target, n_edges)  # n_edges = "rest"
    # Fit on the columns these rows use only: the coefficient matrix stays small.
    cols, local = np.unique(X.indices, return_inverse=True)
    Xc = sp.csr_matrix((X.data, local.ravel(), X.indptr), shape=(X.shape[0], len(cols)))
    svm = LinearSVC(C=C, loss="squared_hinge", dual=True, tol=tol, max_iter=max_iter, random_state=0)
    # liblinear draws from one random generator per process, seeded at each fit: two fits in
    # threads at once (a multi-threaded Dask worker) would interleave draws and change W.
    with _FIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # A leaf with many labels and few rows looks like regression to scikit-learn.
        warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        svm.fit(Xc, target, sample_weight=weight)
    fitted = svm.classes_
    coef = svm.coef_
    intercept = svm.intercept_
    if len(fitted) == 2:  # one binary model: fitted[1] is the positive side
        coef = np.vstack((-coef[0], coef[0]))
        intercept = np.array([-intercept[0], intercept[0]])
    mine = fitted < n_edges
    fitted, coef, intercept = fitted[mine], coef[mine], intercept[mine]
    bias[fitted] = intercept
    keep_c, keep_f = np.nonzero(np.abs(coef) >= prune)
    return (
        cols[keep_f].astype(np.int64),
        fitted[keep_c].astype(np.int64),
        coef[keep_c, keep_f].astype(np.float32),
        bias,
    )


# A job: one node, and the local edges to fit there (None: all of them).
Job = tuple[int, "np.ndarray | None"]


@dataclass(frozen=True)
class NodeRows:
    """What a task needs to fit the rankers of one node: only the rows under that node."""

    node: int
    edge_start: int
    n_edges: int
    wants: list[np.ndarray | None]  # one job per entry: the local edges it fits
    X: sp.csr_matrix  # the node's rows, features as built (float32 or float64)
    target: np.ndarray  # local edge of each row
    weight: np.ndarray | None


@dataclass(frozen=True)
class FitSettings:
    """The settings every ranker task shares."""

    n_features: int
    C: float
    prune: float
    tol: float
    max_iter: int


def fit_chunk(settings: FitSettings, payload: Sequence[NodeRows]) -> tuple[list[int], Triplets]:
    """Rankers of the jobs of several nodes as W triplets, and the node of every job."""
    s = settings
    feats, edges, vals = [], [], []
    done: list[int] = []
    for part in payload:
        X = sp.csr_matrix(part.X, dtype=np.float64)
        for want in part.wants:
            f, e, v, b = _fit_node(X, part.target, part.weight, part.n_edges, want, s.C, s.prune, s.tol, s.max_iter)
            nz = np.flatnonzero(b)
            feats += [f, np.full(len(nz), s.n_features, dtype=np.int64)]
            edges += [e + part.edge_start, nz + part.edge_start]
            vals += [v, b[nz].astype(np.float32)]
            done.append(part.node)
    return done, (np.concatenate(feats), np.concatenate(edges), np.concatenate(vals))


def _payloads(
    tree: LabelTree,
    chunks: Sequence[Sequence[Job]],
    X: sp.csr_matrix,
    offsets: np.ndarray,
    rows: np.ndarray,
    edges: np.ndarray,
    weight: np.ndarray | None,
) -> Iterator[list[NodeRows]]:
    """Each chunk's task payload, made when the executor asks for it: the rows of its nodes."""
    for chunk in chunks:
        wants: dict[int, list[np.ndarray | None]] = {}
        for k, want in chunk:
            wants.setdefault(k, []).append(want)
        payload = []
        for k, node_wants in wants.items():
            lo, hi = offsets[k], offsets[k + 1]
            r = rows[lo:hi]
            start = int(tree.edge_start[k])
            payload.append(NodeRows(
                node=k, edge_start=start, n_edges=int(tree.edge_end[k]) - start, wants=node_wants,
                X=X[r], target=edges[lo:hi] - start, weight=None if weight is None else weight[r],
            ))
        yield payload


def _chunks(tree: LabelTree, offsets: np.ndarray, workers: int) -> list[list[Job]]:
    """Jobs grouped into chunks of similar work, biggest first (for load balance).

    With several workers, a node costing more than 1/(4 workers) of the total is split into
    jobs over disjoint groups of its edges, so the root does not train alone at the end.
    """
    n_edges = (tree.edge_end - tree.edge_start).astype(np.int64)
    cost = np.diff(offsets) * np.maximum(n_edges, 1) + 1_000
    limit = cost.sum() / (4 * workers) if workers > 1 else np.inf
    jobs: list[tuple[float, Job]] = []
    for k in np.argsort(-cost, kind="stable").tolist():
        parts = min(int(np.ceil(cost[k] / limit)), int(n_edges[k]) // 2) if cost[k] > limit else 1
        if parts > 1:
            for group in np.array_split(np.arange(n_edges[k]), parts):
                jobs.append((cost[k] / parts, (k, group)))
        else:
            jobs.append((float(cost[k]), (k, None)))
    jobs.sort(key=lambda j: -j[0])
    chunks: list[list[Job]] = []
    current: list[Job] = []
    acc = 0.0
    for c, job in jobs:
        current.append(job)
        acc += c
        if acc >= _CHUNK_COST:
            chunks.append(current)
            current, acc = [], 0.0
    if current:
        chunks.append(current)
    return chunks


def ranker_tasks(
    tree: LabelTree,
    X: sp.csr_matrix,
    y: np.ndarray,
    workers: int = 1,
    sample_weight: np.ndarray | None = None,
    prefix_len: np.ndarray | None = None,
    trie_depth: int = 0,
) -> tuple[list[list[Job]], Iterator[list[NodeRows]]]:
    """How :func:`train_rankers` splits its work: the jobs of each task, and (lazily) the
    payload of each task. The split depends on ``workers``, never on where tasks run."""
    offsets, rows, edges = _rows_per_node(tree, y)
    if prefix_len is not None and trie_depth > 0:
        offsets, rows, edges = _drop_decided_rows(tree, offsets, rows, edges, np.asarray(prefix_len), trie_depth)
    chunks = _chunks(tree, offsets, workers)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return chunks, _payloads(tree, chunks, X, offsets, rows, edges, weight)


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
    sample_weight: np.ndarray | None = None,
    prefix_len: np.ndarray | None = None,
    trie_depth: int = 0,
    executor: Executor | None = None,
) -> sp.csc_matrix:
    """Train every node's rankers; returns W, CSC (n_features + 1, n_edges).

    Each node (internal or leaf) gets one-vs-rest squared-hinge linear SVMs over its edges,
    trained on the rows whose label ``y`` lies under it (teacher-forced negatives); weights
    below ``prune`` in magnitude are dropped, biases kept. Nodes are packed into tasks by
    cost for ``workers`` parallel workers (a very costly node split by groups of its edges);
    each task receives the rows of its nodes only, and runs on ``executor`` (default:
    ``workers`` local processes). W is the same wherever the tasks ran. ``progress(n)`` is
    called with the number of nodes just finished (an increment, as ``tqdm.update`` takes).
    ``sample_weight`` counts each row as that many copies of itself (duplicate examples
    merged).

    With ``prefix_len`` (the typed length of each row) and ``trie_depth``, a branching trie
    node at depth d trains only on rows typed to at most d characters: a longer prefix
    already decides the branch, and the search never compares that node's children for it.
    """
    X = sp.csr_matrix(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    y = np.asarray(y, dtype=np.int64)
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= tree.n_labels):
        raise ValueError(f"label ids must lie in [0, {tree.n_labels}), got [{y.min()}, {y.max()}]")
    if sample_weight is not None and len(sample_weight) != len(y):
        raise ValueError(f"sample_weight has {len(sample_weight)} entries for {len(y)} rows")
    if C <= 0 or prune < 0 or workers < 1:
        raise ValueError(f"need C > 0, prune >= 0, workers >= 1; got C={C}, prune={prune}, workers={workers}")
    chunks, payloads = ranker_tasks(tree, X, y, workers, sample_weight, prefix_len, trie_depth)
    remaining = np.bincount([k for chunk in chunks for k, _ in chunk], minlength=tree.n_nodes)

    def finished(result: tuple[list[int], Triplets]) -> None:
        done = result[0]
        np.subtract.at(remaining, done, 1)
        if progress is not None:
            n_done = int(np.count_nonzero(remaining[np.unique(done)] == 0))
            if n_done:
                progress(n_done)

    settings = FitSettings(n_features=X.shape[1], C=C, prune=prune, tol=tol, max_iter=max_iter)
    parts = [trip for _, trip in (executor or LocalExecutor(workers)).map(fit_chunk, payloads, settings, finished)]
    feats = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    shape = (X.shape[1] + 1, tree.n_edges)
    W = sp.csc_matrix((vals, (feats, cols)), shape=shape, dtype=np.float32)
    W.sort_indices()
    return W
