"""Fitting the label tree: a character trie on the first characters, then balanced
spherical 2-means of the label embeddings below each trie node (docs/METHOD.md)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..tree import LabelTree


def _first_chars(labels: Sequence[str], depth: int) -> np.ndarray:
    """(n, depth) code points of each label's first ``depth`` characters, 0 past its end."""
    if depth == 0 or not labels:
        return np.zeros((len(labels), depth), dtype=np.uint32)
    arr = np.array(labels, dtype=f"<U{depth}")  # truncates
    return arr.view(np.uint32).reshape(len(labels), depth)


def _bisect(
    ids: np.ndarray, emb: sp.csr_matrix, rng: np.random.Generator, iters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced spherical 2-means: split ``ids`` in two halves by projection on c1 - c2."""
    sub = emb[ids]
    n = len(ids)
    half = (n + 1) // 2
    a, b = rng.choice(n, size=2, replace=False)
    diff = (sub[[a]] - sub[[b]]).toarray().ravel()
    left = np.zeros(n, dtype=bool)
    for _ in range(iters):
        proj = sub @ diff
        order = np.argsort(-proj, kind="stable")
        new_left = np.zeros(n, dtype=bool)
        new_left[order[:half]] = True
        if np.array_equal(new_left, left):
            break
        left = new_left
        c1 = sub.T @ left.astype(np.float64)
        c2 = sub.T @ (~left).astype(np.float64)
        # Not np.linalg.norm: a BLAS call, badly slowed by thread contention on busy machines.
        n1, n2 = np.sqrt(np.square(c1).sum()), np.sqrt(np.square(c2).sum())
        diff = (c1 / n1 if n1 > 0 else c1) - (c2 / n2 if n2 > 0 else c2)
    return np.sort(ids[left]), np.sort(ids[~left])


def _cluster_parts(
    ids: np.ndarray, emb: sp.csr_matrix, rounds: int, max_leaf: int, rng: np.random.Generator, iters: int
) -> list[np.ndarray]:
    """Up to 2**rounds parts of ``ids``: bisect every part still above ``max_leaf``."""
    parts = [ids]
    for _ in range(rounds):
        nxt: list[np.ndarray] = []
        for part in parts:
            nxt.extend(_bisect(part, emb, rng, iters) if len(part) > max_leaf else (part,))
        if len(nxt) == len(parts):
            break
        parts = nxt
    return parts


def build_label_tree(
    labels: Sequence[str],
    embeddings: sp.csr_matrix,
    trie_depth: int = 3,
    max_leaf: int = 100,
    branching: int = 16,
    seed: int = 0,
    kmeans_iters: int = 5,
) -> LabelTree:
    """Build the hybrid trie/cluster tree over ``labels`` (distinct, sorted; id = index).

    The first ``trie_depth`` levels branch on the next character (a label that ends at
    depth d gets its own child); a trie node with at most ``max_leaf`` labels is a leaf.
    Below depth ``trie_depth``, balanced spherical 2-means on ``embeddings`` rows, applied
    log2(``branching``) times per node, splits until leaves hold at most ``max_leaf`` labels.
    """
    n = len(labels)
    if embeddings.shape[0] != n:
        raise ValueError(f"embeddings have {embeddings.shape[0]} rows for {n} labels")
    if trie_depth < 0:
        raise ValueError(f"trie_depth must be >= 0, got {trie_depth}")
    if max_leaf < 1:
        raise ValueError(f"max_leaf must be >= 1, got {max_leaf}")
    if branching < 2 or branching & (branching - 1):
        raise ValueError(f"branching must be a power of two >= 2, got {branching}")
    if n == 0:
        raise ValueError("cannot build a label tree over no labels")
    obj = np.array(labels, dtype=object)
    if n > 1 and not np.all(obj[1:] > obj[:-1]):
        raise ValueError("labels must be distinct and sorted lexicographically")
    emb = sp.csr_matrix(embeddings, dtype=np.float64)
    codes = _first_chars(labels, trie_depth)
    rounds = branching.bit_length() - 1
    rng = np.random.default_rng(seed)

    # Queue items: (kind, lo, hi, ids, depth); kind "trie" (contiguous), "cluster", "leaf".
    queue: deque[tuple[str, int, int, np.ndarray | None, int]] = deque()
    n_nodes = 1
    starts: list[int] = []
    ends: list[int] = []
    leaf_flags: list[bool] = []
    los: list[int] = []
    his: list[int] = []
    depths: list[int] = []
    children: list[np.ndarray] = []
    n_edges = 0
    leaf_of_label = np.full(n, -1, dtype=np.int32)

    def kind_of(size: int, depth: int) -> str:
        if size <= max_leaf:
            return "leaf"
        return "trie" if depth < trie_depth else "cluster"

    queue.append((kind_of(n, 0), 0, n, None, 0))
    node = 0
    while queue:
        kind, lo, hi, ids, d = queue.popleft()
        if kind == "trie":
            col = codes[lo:hi, d]
            cuts = lo + np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
            bounds = np.r_[cuts, hi]
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                queue.append((kind_of(b - a, d + 1), a, b, None, d + 1))
            kids = np.arange(n_nodes, n_nodes + len(cuts), dtype=np.int32)
            node_lo, node_hi = lo, hi
        else:
            members = np.arange(lo, hi) if ids is None else ids
            node_lo, node_hi = int(members[0]), int(members[-1]) + 1
            if kind == "leaf":
                kids = members.astype(np.int32)
                leaf_of_label[members] = node
            else:
                parts = _cluster_parts(members, emb, rounds, max_leaf, rng, kmeans_iters)
                for part in parts:
                    queue.append((kind_of(len(part), trie_depth + 1), 0, 0, part, d + 1))
                kids = np.arange(n_nodes, n_nodes + len(parts), dtype=np.int32)
        if kind != "leaf":
            n_nodes += len(kids)
        starts.append(n_edges)
        n_edges += len(kids)
        ends.append(n_edges)
        leaf_flags.append(kind == "leaf")
        los.append(node_lo)
        his.append(node_hi)
        depths.append(d)
        children.append(kids)
        node += 1

    return LabelTree(
        edge_start=np.array(starts, dtype=np.int64),
        edge_end=np.array(ends, dtype=np.int64),
        edge_child=np.concatenate(children).astype(np.int32),
        is_leaf=np.array(leaf_flags, dtype=bool),
        node_lo=np.array(los, dtype=np.int32),
        node_hi=np.array(his, dtype=np.int32),
        depth=np.array(depths, dtype=np.int32),
        leaf_of_label=leaf_of_label,
    )
