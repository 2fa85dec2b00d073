"""A Bloom filter of the queries that too few people typed to be suggested.

Generated candidates (the typed prefix with a completed word, a continuation) are built from
words and bigrams that many people typed, yet the whole string can still be one person's
query: such a candidate is held back unless it is the user's own. The model keeps only this
filter, never the queries: it answers "maybe" for about 1% of other strings (which are then
held back too), so a hit does not prove anyone typed a string. docs/METHOD.md, "Privacy".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from .topk import remember

_HASHES = 7  # with 10 bits a key: about 1% false positives
_BITS_PER_KEY = 10
_MASK64 = (1 << 64) - 1
_MEMO_SIZE = 1 << 14  # answers remembered, at most (about 2 MB)


def _hash_pairs(keys: Iterable[str]) -> np.ndarray:
    """(n, 2) uint64: two independent 64-bit hashes of each key."""
    raw = b"".join(hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest() for k in keys)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


class RareFilter:
    """Membership test for the rare queries of a build; immutable."""

    __slots__ = ("bits", "n_keys", "_bytes", "_memo")

    def __init__(self, bits: np.ndarray, n_keys: int):
        self.bits = np.asarray(bits, dtype=np.uint8)
        self.n_keys = n_keys
        self._bytes = self.bits.tobytes()  # a byte of it is a Python int: no numpy scalar per probe
        self._memo: dict[str, bool] = {}  # key -> answer

    @classmethod
    def of(cls, keys: Iterable[str]) -> RareFilter:
        """The filter holding ``keys``."""
        pairs = _hash_pairs(keys)
        bits = np.zeros((max(64, len(pairs) * _BITS_PER_KEY) + 7) // 8, dtype=np.uint8)
        m = len(bits) * 8
        if len(pairs):
            pos = cls._positions(pairs, m).ravel()
            np.bitwise_or.at(bits, pos >> 3, (1 << (pos & 7)).astype(np.uint8))
        return cls(bits, len(pairs))

    @staticmethod
    def _positions(pairs: np.ndarray, m: int) -> np.ndarray:
        i = np.arange(_HASHES, dtype=np.uint64)
        with np.errstate(over="ignore"):  # double hashing wraps around 2**64 on purpose
            return ((pairs[:, :1] + i * pairs[:, 1:]) % np.uint64(m)).astype(np.int64)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not self.n_keys:
            return False
        # Remembered: a session's keystrokes test many of the same candidates.
        found = self._memo.get(key)
        return remember(self._memo, key, self._probe(key), _MEMO_SIZE) if found is None else found

    def _probe(self, key: str) -> bool:
        # The positions of _positions, in plain integers: one key is faster without numpy.
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little")
        bits = self._bytes
        m = len(bits) * 8
        for i in range(_HASHES):
            pos = ((h1 + i * h2) & _MASK64) % m
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
        return True

    def __len__(self) -> int:
        return self.n_keys

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"bits": self.bits, "n_keys": np.array(self.n_keys)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RareFilter:
        return cls(arrays["bits"], int(arrays["n_keys"]))
