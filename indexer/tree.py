"""The label tree: a character trie on top, balanced spherical 2-means below.

See docs/METHOD.md, "The label tree"; fitted by :mod:`indexer.train.cluster`.

Nodes are numbered breadth-first (root 0). Node ``k`` owns edges
``edge_start[k]:edge_end[k]``; an edge of an internal node points at a child node, an edge
of a leaf at a label id. Labels are sorted strings, so a trie node covers a contiguous id
range; cluster nodes cover any subset, and ``node_lo``/``node_hi`` bound it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

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
