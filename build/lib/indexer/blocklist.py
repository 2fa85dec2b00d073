"""A blocklist of offensive terms and phrases that suggestions must never show.

Terms are normalized with :func:`indexer.normalize.normalize` and match whole words of a
normalized query: the term ``"foo"`` blocks ``"big foo bar"`` but not ``"food"``, and the
phrase ``"foo bar"`` blocks ``"x foo bar y"`` but not ``"foo x bar"``. A list is a text file
(UTF-8), one term or phrase a line; ``#`` starts a comment and blank lines are ignored. The
shipped default list is ``indexer/data/blocklist.txt`` (its source is in
``indexer/data/BLOCKLIST-SOURCE.md``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib.resources import files
from typing import Any

import numpy as np

from .errors import QacError
from .normalize import normalize

__all__ = ["Blocklist", "BlocklistError", "DEFAULT_NAME"]

DEFAULT_NAME = "indexer/data/blocklist.txt"
"""Where the default list lives, for messages: it is read through ``importlib.resources``."""


class BlocklistError(QacError):
    """A blocklist file could not be read."""


def parse_terms(text: str) -> list[str]:
    """Split blocklist text into raw terms: one a line, ``#`` to the end of a line is a comment."""
    terms = []
    for line in text.splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    return terms


def _read(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise BlocklistError(f"cannot read blocklist {os.fspath(path)}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 ({e.reason} at byte {e.start})"
        raise BlocklistError(f"cannot read blocklist {os.fspath(path)}: {reason}") from e


@lru_cache(maxsize=1)
def _default_terms() -> tuple[str, ...]:
    try:
        text = (files("indexer") / "data" / "blocklist.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BlocklistError(f"cannot read blocklist {DEFAULT_NAME}: {e}") from e
    return tuple(parse_terms(text))


class Blocklist:
    """An immutable set of normalized blocked terms, matched on whole words of a query."""

    __slots__ = ("_terms", "_set", "_words", "_max_words")

    _terms: tuple[str, ...]
    _set: frozenset[str]
    _words: frozenset[str]
    _max_words: int

    def __init__(self, terms: Iterable[str] = ()) -> None:
        """Build from raw terms; each is normalized, and terms that normalize to ``""`` are dropped."""
        if isinstance(terms, str):
            raise TypeError("Blocklist wants an iterable of terms, not one string")
        normed = {normalize(t) for t in terms}
        normed.discard("")
        object.__setattr__(self, "_terms", tuple(sorted(normed)))
        object.__setattr__(self, "_set", frozenset(normed))
        object.__setattr__(self, "_words", frozenset(w for t in normed for w in t.split(" ")))
        object.__setattr__(self, "_max_words", max((t.count(" ") + 1 for t in normed), default=0))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls) -> Blocklist:
        """The shipped default list (``indexer/data/blocklist.txt``)."""
        return cls(_default_terms())

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], *, default: bool = True
    ) -> Blocklist:
        """Read terms from text files, plus the default list when ``default`` is true.

        Raises :class:`BlocklistError` naming the path and the reason if a file cannot be read.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        terms: list[str] = list(_default_terms()) if default else []
        for path in paths:
            terms.extend(parse_terms(_read(path)))
        return cls(terms)

    @classmethod
    def from_text(cls, text: str) -> Blocklist:
        """Parse blocklist text (as written by :meth:`to_text` or found in a list file)."""
        return cls(parse_terms(text))

    def to_text(self) -> str:
        """The list as text, one normalized term a line after a comment header; see :meth:`from_text`."""
        header = f"# qac blocklist: {len(self)} terms, sha256 {self.digest()}\n"
        return header + "".join(f"{t}\n" for t in self._terms)

    def union(self, other: Blocklist) -> Blocklist:
        """A list with the terms of both."""
        return Blocklist(self._terms + other._terms)

    __or__ = union

    # -- inspection --------------------------------------------------------------------

    @property
    def terms(self) -> tuple[str, ...]:
        """The normalized terms, sorted."""
        return self._terms

    def __len__(self) -> int:
        return len(self._terms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blocklist) and self._set == other._set

    def __hash__(self) -> int:
        return hash(self._set)

    def __repr__(self) -> str:
        return f"Blocklist({len(self)} terms, sha256 {self.digest()[:12]})"

    def digest(self) -> str:
        """SHA-256 hex of the sorted terms, each followed by a newline, in UTF-8."""
        return hashlib.sha256("".join(f"{t}\n" for t in self._terms).encode("utf-8")).hexdigest()

    # -- matching ----------------------------------------------------------------------

    def _blocks_words(self, words: Sequence[str]) -> bool:
        known, blocked, longest = self._words, self._set, self._max_words
        n = len(words)
        for i in range(n):
            if words[i] not in known:
                continue
            gram = words[i]
            if gram in blocked:
                return True
            for j in range(i + 1, min(n, i + longest)):
                if words[j] not in known:
                    break
                gram = f"{gram} {words[j]}"
                if gram in blocked:
                    return True
        return False

    def blocks(self, query: str) -> bool:
        """Whether a normalized query contains a blocked term as whole, consecutive words."""
        words = query.split()
        if self._words.isdisjoint(words):
            return False
        return self._blocks_words(words)

    def blocks_prefix(self, prefix: str) -> bool:
        """Whether the complete words of a typed prefix contain a blocked term.

        The prefix is normalized here; its last word counts only when the prefix ends with a
        separator (whitespace or ``.``), since a partial word may still become another word.
        """
        words = normalize(prefix).split()
        if words and not (prefix[-1:].isspace() or prefix.endswith(".")):
            words.pop()
        if self._words.isdisjoint(words):
            return False
        return self._blocks_words(words)

    def mask(self, queries: Sequence[str]) -> np.ndarray:
        """``blocks(q)`` for each normalized query, as a numpy bool array."""
        out = np.zeros(len(queries), dtype=bool)
        if not self._terms:
            return out
        known = self._words
        isdisjoint = known.isdisjoint
        single = self._max_words == 1
        blocked = self._set
        for i, q in enumerate(queries):
            words = q.split()
            if isdisjoint(words):
                continue
            if single:
                out[i] = not blocked.isdisjoint(words)
            else:
                out[i] = self._blocks_words(words)
        return out
