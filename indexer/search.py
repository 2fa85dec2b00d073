"""Beam search over the label tree with the node rankers' weights.

``W`` is a CSC matrix of shape (n_features + 1, n_edges): column ``e`` scores edge ``e`` of
the tree (a child node, or a label under a leaf); the last row is the bias, matched by an
implicit 1 in the input. A child's score is its parent's times exp(-max(0, 1 - w.x)^3).
The rankers are fitted by :mod:`indexer.train.node_rankers`; see docs/METHOD.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .tfidf import ragged_positions
from .tree import LabelTree


@dataclass(frozen=True)
class SearchIndex:
    """W regrouped for search: for each (node, feature) pair, that feature's weights on the
    node's edges. A beam step then touches only the weights of features present in x.

    Entries of key ``keys[i] = node * stride + feature`` are ``ptr[i]:ptr[i+1]``; each has
    the edge's position among its node's edges (``child``) and its weight (``val``).
    """

    stride: int
    keys: np.ndarray
    ptr: np.ndarray
    child: np.ndarray
    val: np.ndarray

    @classmethod
    def build(cls, tree: LabelTree, W: sp.spmatrix) -> SearchIndex:
        """Regroup the columns of ``W`` (one per edge of ``tree``) by owner node and feature."""
        Wc = sp.csc_matrix(W)
        if Wc.shape[1] != tree.n_edges:
            raise ValueError(f"W has {Wc.shape[1]} columns but the tree has {tree.n_edges} edges")
        stride = Wc.shape[0]
        edge = np.repeat(np.arange(tree.n_edges, dtype=np.int64), np.diff(Wc.indptr))
        node = tree.edge_node[edge].astype(np.int64)
        key_dtype = np.int32 if tree.n_nodes * stride < 2**31 else np.int64
        key = (node * stride + Wc.indices).astype(key_dtype)
        order = np.lexsort((edge, key))
        key = key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
        ptr_dtype = np.int32 if len(key) < 2**31 else np.int64
        return cls(
            stride=stride,
            keys=key[first],
            ptr=np.r_[first, len(key)].astype(ptr_dtype),
            child=(edge - tree.edge_start[node])[order].astype(np.int32),
            val=Wc.data[order].astype(np.float32),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to save, so that loading a model need not regroup W again."""
        return {"stride": np.array(self.stride), "keys": self.keys, "ptr": self.ptr, "child": self.child,
                "val": self.val}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SearchIndex:
        """What :meth:`to_arrays` saved; raises ``ValueError`` if the arrays do not fit together."""
        index = cls(int(arrays["stride"]), arrays["keys"], arrays["ptr"], arrays["child"], arrays["val"])
        if not (len(index.ptr) == len(index.keys) + 1 and len(index.child) == len(index.val)
                and (not len(index.keys) or int(index.ptr[-1]) == len(index.val))):
            raise ValueError("search index arrays of inconsistent lengths")
        return index

    def edge_scores(
        self, nodes: np.ndarray, n_child: np.ndarray, xi: np.ndarray, xv: np.ndarray
    ) -> np.ndarray:
        """w.x of every edge of ``nodes`` (their edges concatenated in node order)."""
        keys = self.keys
        n_out = int(n_child.sum())
        # Same dtype as keys, or searchsorted would convert all of keys on every call.
        if len(nodes) == 1:
            q = (int(nodes[0]) * self.stride + xi).astype(keys.dtype)
        else:
            q = (nodes[:, None] * self.stride + xi).astype(keys.dtype).ravel()
        p = keys.searchsorted(q)
        np.minimum(p, len(keys) - 1, out=p)
        hit = np.flatnonzero(keys[p] == q)
        if not len(hit):
            return np.zeros(n_out)
        p = p[hit]
        start = self.ptr[p]
        lens = self.ptr[p + 1] - start
        ends = lens.cumsum()
        pos = (start - ends + lens).repeat(lens) + np.arange(ends[-1])
        if len(nodes) == 1:  # the same sums, without the per-node offsets
            slot = self.child[pos]
            weight = xv[hit].repeat(lens) * self.val[pos]
        else:
            nx = len(xi)
            slot = (n_child.cumsum() - n_child)[hit // nx].repeat(lens) + self.child[pos]
            weight = xv[hit % nx].repeat(lens) * self.val[pos]
        return np.bincount(slot, weights=weight, minlength=n_out)


def beam_search(
    tree: LabelTree,
    W: sp.spmatrix | SearchIndex,
    x_idx: np.ndarray,
    x_val: np.ndarray,
    beam: int = 10,
    label_range: tuple[int, int] | None = None,
    topk: int = 10,
    label_ranges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``topk`` labels for input ``x`` (sparse: indices, values), scores descending.

    Keeps the ``beam`` best nodes per level; labels of expanded leaves go to a pool. With
    ``label_range=(lo, hi)`` only nodes holding some label id in [lo, hi) are expanded and
    only labels in it are returned. ``W`` is the :class:`SearchIndex` to search (built once
    per model), or the weight matrix to build one from for this call. Thread-safe.

    ``label_ranges`` (an (r, 2) array of [lo, hi) rows, instead of ``label_range``): labels in
    any of the ranges; the search then starts at the lowest node covering each range (each
    with score 1), below the trie levels whose rankers only learned to pick the next typed
    character, so ranges under different trie nodes compete on their labels alone.
    """
    if beam < 1 or topk < 1:
        raise ValueError(f"beam and topk must be >= 1, got beam={beam}, topk={topk}")
    index = W if isinstance(W, SearchIndex) else SearchIndex.build(tree, W)
    no_labels = np.zeros(0, dtype=np.int32), np.zeros(0)
    if label_ranges is not None:
        ranges = np.asarray(label_ranges, dtype=np.int64).reshape(-1, 2)
        ranges = ranges[ranges[:, 1] > ranges[:, 0]]
        if not len(ranges) or not tree.n_labels:
            return no_labels
        range_lo, range_hi = ranges[:, 0], ranges[:, 1]
        nodes = np.unique([covering_node(tree, int(a), int(b)) for a, b in ranges]).astype(np.int64)
        scores = np.ones(len(nodes))
    else:
        lo, hi = label_range if label_range is not None else (0, tree.n_labels)
        if hi <= lo or tree.node_hi[0] <= lo or tree.node_lo[0] >= hi:
            return no_labels
        nodes = np.zeros(1, dtype=np.int64)
        scores = np.ones(1)
    # The bias is feature stride - 1, with value 1: it sorts last, as searchsorted likes.
    xi = np.empty(len(x_idx) + 1, dtype=np.int64)
    xi[:-1] = x_idx
    xi[-1] = index.stride - 1
    xv = np.empty(len(x_val) + 1, dtype=np.float32)
    xv[:-1] = x_val
    xv[-1] = 1.0
    pool_labels: list[np.ndarray] = []
    pool_scores: list[np.ndarray] = []
    n_start = len(nodes)
    while len(nodes):
        if len(nodes) > 1:
            order = nodes.argsort()
            nodes, scores = nodes[order], scores[order]
            starts = tree.edge_start[nodes]
            n_child = tree.edge_end[nodes] - starts
            edges = ragged_positions(starts, n_child)
        else:
            node = int(nodes[0])
            start, end = int(tree.edge_start[node]), int(tree.edge_end[node])
            if label_ranges is None:  # one node, one range: its edges as slices
                wx = index.edge_scores(nodes, np.array([end - start]), xi, xv)
                s = scores[0] * np.exp(-(np.maximum(0.0, 1.0 - wx) ** 3))
                child = tree.edge_child[start:end]
                if label_range is not None:
                    ok = (tree.edge_lo[start:end] < hi) & (tree.edge_hi[start:end] > lo)
                    child, s = child[ok], s[ok]
                if tree.is_leaf[node]:  # its edges are labels
                    if len(child):
                        pool_labels.append(child)
                        pool_scores.append(s)
                    break
                nodes, scores = child.astype(np.int64), s
                if len(nodes) > beam:
                    best = np.argpartition(-scores, beam - 1)[:beam]
                    nodes, scores = nodes[best], scores[best]
                continue
            n_child = np.array([end - start])
            edges = np.arange(start, end)
        wx = index.edge_scores(nodes, n_child, xi, xv)
        s = scores.repeat(n_child) * np.exp(-(np.maximum(0.0, 1.0 - wx) ** 3))
        if label_ranges is not None:
            ok = ((tree.edge_lo[edges][:, None] < range_hi) & (tree.edge_hi[edges][:, None] > range_lo)).any(1)
            edges, s = edges[ok], s[ok]
        elif label_range is not None:
            ok = (tree.edge_lo[edges] < hi) & (tree.edge_hi[edges] > lo)
            edges, s = edges[ok], s[ok]
        is_label = tree.edge_is_label[edges]
        child = tree.edge_child[edges]
        if is_label.any():
            pool_labels.append(child[is_label])
            pool_scores.append(s[is_label])
            keep = ~is_label
            child, s = child[keep], s[keep]
        nodes, scores = child.astype(np.int64), s
        if len(nodes) > beam:
            best = np.argpartition(-scores, beam - 1)[:beam]
            nodes, scores = nodes[best], scores[best]
    if not pool_labels:
        return no_labels
    labels = np.concatenate(pool_labels)
    final = np.concatenate(pool_scores)
    if n_start > 1:  # nested start nodes reach a label twice
        order = np.lexsort((labels, -final))
        labels, final = labels[order], final[order]
        _, first = np.unique(labels, return_index=True)
        labels, final = labels[first], final[first]
    if len(labels) > topk:
        best = np.argpartition(-final, topk - 1)[:topk]
        labels, final = labels[best], final[best]
    order = np.lexsort((labels, -final))
    return labels[order], final[order]


def covering_node(tree: LabelTree, lo: int, hi: int) -> int:
    """The lowest node of ``tree`` that holds every label id in [lo, hi) (labels under a trie
    node are contiguous, so this is the trie node of their common prefix, or one above)."""
    node = int(tree.leaf_of_label[lo])
    while node > 0 and (tree.node_lo[node] > lo or tree.node_hi[node] < hi):
        node = int(tree.parent[node])
    return node
