"""Most frequent keys under a prefix, in O(k log k) per query, over a sorted key list."""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

# Sorts after every character a normalized query can hold.
_MAX_CHAR = "\U0010ffff"
# Answers each memory of a PrefixTopK keeps, at most (then it starts over).
MEMO_SIZE = 1 << 16
K = TypeVar("K")
V = TypeVar("V")
_UNKNOWN = -2
# PrefixTopK.top_range sorts a range of up to this many keys, and partitions one of up to
# this many keys per key asked; larger ranges use the range-argmax heap (timed on 14k words).
_SORT_RANGE = 256
_PARTITION_RANGE_PER_K = 1000


def sparse_table(values: np.ndarray) -> np.ndarray:
    """Range-argmax table: ``table[j, i]`` is the argmax of ``values[i : i + 2**j]``."""
    n = len(values)
    levels = max(1, int(n).bit_length())
    table = np.zeros((levels, n), dtype=np.int32)
    table[0] = np.arange(n, dtype=np.int32)
    for j in range(1, levels):
        half = 1 << (j - 1)
        left = table[j - 1, : n - half]
        right = table[j - 1, half:]
        pick = np.where(values[right] > values[left], right, left)
        table[j, : n - half] = pick
        table[j, n - half :] = table[j - 1, n - half :]
    return table


def remember(memo: dict[K, V], key: K, value: V, size: int = MEMO_SIZE) -> V:
    """Put ``value`` in ``memo`` and return it; a full memo is emptied first. Plain dict
    operations only, so threads may share the memo."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value
    return value


def _looked_up(memo: dict[str, V], keys: Sequence[str], look: Callable[[str], V], missing: V,
               members: frozenset[str] | None, absent: V) -> list[V]:
    """``look`` of each of ``keys``, through ``memo`` (``missing``: not in it); with
    ``members``, a key not in it is ``absent`` at once, and not remembered (a typo or a
    crafted word costs one set test, and does not push a real word out of the memo)."""
    if members is None:
        found = [memo.get(k, missing) for k in keys]
    else:
        found = [memo.get(k, missing) if k in members else absent for k in keys]
    if missing in found:
        for j, v in enumerate(found):
            if v == missing:
                found[j] = remember(memo, keys[j], look(keys[j]))
    return found


class PrefixTopK:
    """Keys sorted lexicographically with a weight each; answers "top k keys starting with p".

    Keys under a prefix form one contiguous range of the sorted list, so a top-k is k
    range-argmax lookups on a sparse table; ties go to the lexicographically first key.
    """

    def __init__(self, keys: Sequence[str], weights: np.ndarray, table: np.ndarray | None = None):
        self.keys = keys
        self.weights = np.asarray(weights)
        self.table = sparse_table(self.weights) if table is None else table
        self.cumulative = np.concatenate(([0.0], np.cumsum(self.weights, dtype=np.float64)))
        self._memo: dict[str, int] = {}  # key -> index or -1: the answers of indices()
        self._count_memo: dict[str, float] = {}  # key -> weight or 0: the answers of counts()
        self._children: dict[str, tuple[int, int, str, tuple[int, ...]]] = {}  # of children()
        self._tops: dict[tuple[int, int, int], list[int]] = {}  # (lo, hi, k) -> top_range()
        self._ranges: dict[str, tuple[int, int]] = {}  # prefix -> range()
        self.members: frozenset[str] | None = None  # the keys as a set, once keep_members() built it

    def keep_members(self) -> None:
        """Keep the keys as a set too (tens of bytes a key): an absent key, what a typo or a
        crafted word is looked up as, is then told by one set test instead of a binary search."""
        if self.members is None:
            self.members = frozenset(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: str, lo: int = 0, hi: int | None = None) -> int:
        """The index of ``key``, or -1 when it is absent (from ``[lo, hi)``, if it can only be there)."""
        if self.members is not None and key not in self.members:
            return -1
        hi = len(self.keys) if hi is None else hi
        i = bisect_left(self.keys, key, lo, hi)
        return i if i < hi and self.keys[i] == key else -1

    def indices(self, keys: Sequence[str]) -> np.ndarray:
        """:meth:`index` of each of ``keys``, as an int64 array. A keystroke looks up many keys
        that the keystrokes before it did: the last :data:`MEMO_SIZE` answers are remembered
        (a cache, so the index stays safe to share across threads)."""
        return np.array(_looked_up(self._memo, keys, self.index, _UNKNOWN, self.members, -1), dtype=np.int64)

    def children(self, prefix: str) -> tuple[int, int, str, tuple[int, ...]]:
        """The keys under ``prefix`` as a trie node: their range ``lo, hi``, the characters
        that follow ``prefix`` in them (in order) and where each character's keys start
        (then ``hi``). Found with one binary search per character, and remembered (the
        first characters of words are asked for on most typo keystrokes)."""
        hit = self._children.get(prefix)
        if hit is None:
            keys = self.keys
            lo, hi = self.range(prefix)
            n = len(prefix)
            j = lo + 1 if lo < hi and len(keys[lo]) == n else lo  # prefix itself, a key
            chars: list[str] = []
            starts: list[int] = []
            while j < hi:
                c = keys[j][n]
                chars.append(c)
                starts.append(j)
                j = bisect_left(keys, prefix + c + _MAX_CHAR, j, hi)
            starts.append(hi)
            hit = remember(self._children, prefix, (lo, hi, "".join(chars), tuple(starts)))
        return hit

    def counts(self, keys: Sequence[str]) -> np.ndarray:
        """:meth:`count` of each of ``keys``, as a float64 array; remembered as
        :meth:`indices` are."""
        return np.array(self.count_list(keys), dtype=np.float64)

    def count_list(self, keys: Sequence[str], within: str | None = None) -> list[float]:
        """:meth:`counts` as a list. ``within``: a prefix most of ``keys`` start with; a key
        not remembered that starts with it is searched for among the keys under it only."""
        if within is None:
            return _looked_up(self._count_memo, keys, self.count, -1.0, self.members, 0.0)
        lo, hi = self.range(within)

        def look(key: str) -> float:
            i = self.index(key, lo, hi) if key.startswith(within) else self.index(key)
            return float(self.weights[i]) if i >= 0 else 0.0

        return _looked_up(self._count_memo, keys, look, -1.0, self.members, 0.0)

    def count(self, key: str) -> float:
        """The weight of ``key``, 0 when it is absent."""
        i = self.index(key)
        return float(self.weights[i]) if i >= 0 else 0.0

    def total(self, prefix: str) -> float:
        """The summed weight of all keys that start with ``prefix``."""
        lo, hi = self.range(prefix)
        return float(self.cumulative[hi] - self.cumulative[lo])

    def range(self, prefix: str) -> tuple[int, int]:
        """The ``[lo, hi)`` indices of the keys that start with ``prefix`` (remembered: one
        keystroke asks for the same ranges several times)."""
        found = self._ranges.get(prefix)
        if found is None:
            lo = bisect_left(self.keys, prefix)
            found = remember(self._ranges, prefix, (lo, bisect_left(self.keys, prefix + _MAX_CHAR, lo)))
        return found

    def _argmax(self, lo: int, hi: int) -> int:
        j = (hi - lo).bit_length() - 1
        a = int(self.table[j, lo])
        b = int(self.table[j, hi - (1 << j)])
        w = self.weights
        return b if w[b] > w[a] or (w[b] == w[a] and b < a) else a

    def top_range(self, lo: int, hi: int, k: int) -> list[int]:
        """Indices of the ``k`` heaviest keys in ``[lo, hi)``, heaviest first."""
        if hi <= lo or k <= 0:
            return []
        n = hi - lo
        if n <= k:
            idx = np.arange(lo, hi)
            return idx[np.argsort(-self.weights[lo:hi], kind="stable")].tolist()
        # The same prefixes (and the first letters of every word) come back on many keystrokes.
        top = self._tops.get((lo, hi, k))
        if top is None:
            top = remember(self._tops, (lo, hi, k), self._top_range(lo, hi, k))
        return list(top)

    def _top_range(self, lo: int, hi: int, k: int) -> list[int]:
        n = hi - lo
        # Heaviest first, ties to the first key, as the heap below gives them: a sort of the
        # range when it is small, of the keys at least as heavy as the k-th when it is not
        # too large; the heap's cost grows with k only.
        w = self.weights[lo:hi]
        if n <= _SORT_RANGE:
            return (np.argsort(-w, kind="stable")[:k] + lo).tolist()
        if n <= _PARTITION_RANGE_PER_K * k:
            kth = np.partition(w, n - k)[n - k]
            heavy = np.flatnonzero(w >= kth)
            return (heavy[np.argsort(-w[heavy], kind="stable")[:k]] + lo).tolist()
        out: list[int] = []
        best = self._argmax(lo, hi)
        heap = [(-float(self.weights[best]), best, lo, hi)]
        while heap and len(out) < k:
            _, i, a, b = heapq.heappop(heap)
            out.append(i)
            for x, y in ((a, i), (i + 1, b)):
                if y > x:
                    m = self._argmax(x, y)
                    heapq.heappush(heap, (-float(self.weights[m]), m, x, y))
        return out

    def heaviest_prefixes(self, n: int) -> list[str]:
        """The ``n`` non-empty prefixes whose keys weigh most in total, heaviest first (ties:
        the first in key order). A prefix weighs at least as much as any longer one, so a
        best-first walk down the trie finds them, expanding one node per prefix taken."""
        found: list[str] = []
        if n <= 0:
            return found
        cum = self.cumulative
        heap: list[tuple[float, int, str]] = []

        def push_children(prefix: str) -> None:
            _, _, chars, starts = self.children(prefix)
            for c, lo, hi in zip(chars, starts, starts[1:]):
                heapq.heappush(heap, (-float(cum[hi] - cum[lo]), lo, prefix + c))

        push_children("")
        while heap and len(found) < n:
            _, _, prefix = heapq.heappop(heap)
            found.append(prefix)
            push_children(prefix)
        return found

    def top(self, prefix: str, k: int) -> list[int]:
        """Indices of the ``k`` heaviest keys that start with ``prefix``, heaviest first."""
        lo, hi = self.range(prefix)
        return self.top_range(lo, hi, k)
