"""The label tree: a character trie on top, balanced spherical 2-means below (METHOD.md 3).

Nodes are numbered breadth-first (root 0). Node ``k`` owns edges
``edge_start[k]:edge_end[k]``; an edge of an internal node points at a child node, an edge
of a leaf at a label id. Labels are sorted strings, so a trie node covers a contiguous id
range; cluster nodes cover any subset, and ``node_lo``/``node_hi`` bound it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

_FIELDS = (
    "edge_start",
    "edge_end",
    "edge_child",
    "is_leaf",
    "node_lo",
    "node_hi",
    "depth",
    "leaf_of_label",
)


@dataclass(frozen=True, eq=False)
class LabelTree:
    """Flat-array label tree; derived lookups (parents, edge ranges) are built on creation."""

    edge_start: np.ndarray  # (n_nodes,) int64
    edge_end: np.ndarray  # (n_nodes,) int64
    edge_child: np.ndarray  # (n_edges,) int32: node id, or label id under a leaf
    is_leaf: np.ndarray  # (n_nodes,) bool
    node_lo: np.ndarray  # (n_nodes,) int32: min label id under the node
    node_hi: np.ndarray  # (n_nodes,) int32: max label id under the node + 1
    depth: np.ndarray  # (n_nodes,) int32
    leaf_of_label: np.ndarray  # (n_labels,) int32
    # Derived, not saved:
    edge_node: np.ndarray = field(init=False, repr=False)  # owner node of each edge
    edge_is_label: np.ndarray = field(init=False, repr=False)  # edge owned by a leaf
    edge_lo: np.ndarray = field(init=False, repr=False)  # label range of the edge's child
    edge_hi: np.ndarray = field(init=False, repr=False)
    parent: np.ndarray = field(init=False, repr=False)  # (n_nodes,) parent node, -1 at root
    parent_edge: np.ndarray = field(init=False, repr=False)  # edge leading to node, -1 at root
    label_edge: np.ndarray = field(init=False, repr=False)  # (n_labels,) edge of each label

    def __post_init__(self) -> None:
        n_nodes = len(self.edge_start)
        lens = self.edge_end - self.edge_start
        edge_node = np.repeat(np.arange(n_nodes, dtype=np.int32), lens)
        if len(edge_node) != len(self.edge_child):
            raise ValueError(
                f"label tree: edges cover {len(edge_node)} slots but edge_child has {len(self.edge_child)}"
            )
        is_label = self.is_leaf[edge_node]
        child = self.edge_child.astype(np.int64)
        internal = ~is_label
        edge_lo = np.where(internal, self.node_lo[np.where(internal, child, 0)], child)
        edge_hi = np.where(internal, self.node_hi[np.where(internal, child, 0)], child + 1)
        parent = np.full(n_nodes, -1, dtype=np.int32)
        parent_edge = np.full(n_nodes, -1, dtype=np.int64)
        parent[child[internal]] = edge_node[internal]
        parent_edge[child[internal]] = np.flatnonzero(internal)
        label_edge = np.full(len(self.leaf_of_label), -1, dtype=np.int64)
        label_edge[child[is_label]] = np.flatnonzero(is_label)
        derived = {
            "edge_node": edge_node,
            "edge_is_label": is_label,
            "edge_lo": edge_lo.astype(np.int32),
            "edge_hi": edge_hi.astype(np.int32),
            "parent": parent,
            "parent_edge": parent_edge,
            "label_edge": label_edge,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"LabelTree(n_nodes={self.n_nodes}, n_edges={self.n_edges}, n_leaves={self.n_leaves}, "
            f"n_labels={self.n_labels}, max_depth={self.max_depth})"
        )

    @property
    def n_nodes(self) -> int:
        return len(self.edge_start)

    @property
    def n_edges(self) -> int:
        return len(self.edge_child)

    @property
    def n_leaves(self) -> int:
        return int(self.is_leaf.sum())

    @property
    def n_labels(self) -> int:
        return len(self.leaf_of_label)

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if len(self.depth) else 0

    def children(self, node: int) -> np.ndarray:
        """Child node ids (or label ids, for a leaf) of ``node``."""
        return self.edge_child[self.edge_start[node] : self.edge_end[node]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The defining arrays, for ``np.savez``."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LabelTree:
        """Rebuild a tree from :meth:`to_arrays` output."""
        missing = [name for name in _FIELDS if name not in arrays]
        if missing:
            raise ValueError(f"label tree arrays lack {missing}")
        return cls(**{name: np.asarray(arrays[name]) for name in _FIELDS})


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
