"""Terms that suggestions must not show, in two tiers: blocked and sensitive.

A **blocked** term is never shown. A **sensitive** term (``anal``, ``naked``: fine in a
query, unwelcome as a completion of ``an`` or ``na``) is shown only in a suggestion for a
typed prefix that holds the whole term itself: ``anal f`` may complete to ``anal fissure``.

Terms are normalized with :func:`indexer.normalize.normalize` and match whole words of a
normalized query: the term ``"foo"`` blocks ``"big foo bar"`` but not ``"food"``, and the
phrase ``"foo bar"`` blocks ``"x foo bar y"`` but not ``"foo x bar"``. Both sides are
compared on their look-alike skeleton (:mod:`indexer.skeleton`): ``fuсk`` with a Cyrillic
``с``, ``fúck`` and ``f_u_c_k`` match ``fuck``. A list is a text file (UTF-8), one term or
phrase a line; ``#`` starts a comment and blank lines are ignored. The shipped default lists
are ``indexer/data/blocklist.txt`` and ``indexer/data/sensitive.txt`` (their sources are in
``indexer/data/BLOCKLIST-SOURCE.md``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from importlib.resources import files
from typing import Any

import numpy as np

from .errors import QacError
from .normalize import normalize
from .skeleton import skeleton, skeleton_words

__all__ = ["Blocklist", "BlocklistError", "DEFAULT_NAME", "SENSITIVE_NAME"]

DEFAULT_NAME = "indexer/data/blocklist.txt"
"""Where the default list lives, for messages: it is read through ``importlib.resources``."""
SENSITIVE_NAME = "indexer/data/sensitive.txt"
"""Where the default sensitive list lives."""

_NONE: frozenset[str] = frozenset()


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


@lru_cache(maxsize=2)
def _default_terms(name: str = "blocklist.txt") -> tuple[str, ...]:
    try:
        text = (files("indexer") / "data" / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BlocklistError(f"cannot read blocklist indexer/data/{name}: {e}") from e
    return tuple(parse_terms(text))


class _Terms:
    """One tier: normalized terms, matched on the skeletons of whole, consecutive words;
    ``words`` holds every skeleton word of every term."""

    __slots__ = ("terms", "words", "_set", "_max_words")

    def __init__(self, terms: Iterable[str]) -> None:
        normed = {normalize(t) for t in terms}
        normed.discard("")
        skeletons = {skeleton(t) for t in normed}
        skeletons.discard("")
        self.terms = tuple(sorted(normed))
        self._set = frozenset(skeletons)
        self.words = frozenset(w for t in skeletons for w in t.split(" "))
        self._max_words = max((t.count(" ") + 1 for t in skeletons), default=0)

    def found(self, words: Sequence[str]) -> Iterator[str]:
        """The terms that are runs of consecutive ``words`` (skeleton words), in order."""
        known, terms, longest = self.words, self._set, self._max_words
        n = len(words)
        for i in range(n):
            if words[i] not in known:
                continue
            gram = words[i]
            if gram in terms:
                yield gram
            for j in range(i + 1, min(n, i + longest)):
                if words[j] not in known:
                    break
                gram = f"{gram} {words[j]}"
                if gram in terms:
                    yield gram

    def holds(self, words: Sequence[str]) -> bool:
        """Whether some term is a run of consecutive ``words``."""
        return not self.words.isdisjoint(words) and next(self.found(words), None) is not None

    def digest(self) -> str:
        return hashlib.sha256("".join(f"{t}\n" for t in self.terms).encode("utf-8")).hexdigest()


class Blocklist:
    """Immutable blocked and sensitive terms, matched on whole words of a query's skeleton."""

    __slots__ = ("_blocked", "_sensitive")

    _blocked: _Terms
    _sensitive: _Terms

    def __init__(self, terms: Iterable[str] = (), sensitive: Iterable[str] = ()) -> None:
        """Build from raw blocked ``terms`` and ``sensitive`` ones; each is normalized, and terms
        that normalize to ``""`` are dropped."""
        if isinstance(terms, str) or isinstance(sensitive, str):
            raise TypeError("Blocklist wants an iterable of terms, not one string")
        object.__setattr__(self, "_blocked", _Terms(terms))
        object.__setattr__(self, "_sensitive", _Terms(sensitive))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # Unpickling (a build's tasks on Dask or process workers) sets the slots past __setattr__.
        for name, value in state[1].items():
            object.__setattr__(self, name, value)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def default(cls) -> Blocklist:
        """The shipped default lists (``indexer/data/blocklist.txt`` and ``sensitive.txt``)."""
        return cls(_default_terms(), _default_terms("sensitive.txt"))

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], *, default: bool = True,
        sensitive: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] = (),
    ) -> Blocklist:
        """Blocked terms from the files ``paths`` and sensitive ones from the files
        ``sensitive``, plus the default lists when ``default`` is true.

        Raises :class:`BlocklistError` naming the path and the reason if a file cannot be read.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(sensitive, (str, os.PathLike)):
            sensitive = [sensitive]
        blocked: list[str] = list(_default_terms()) if default else []
        careful: list[str] = list(_default_terms("sensitive.txt")) if default else []
        for path in paths:
            blocked.extend(parse_terms(_read(path)))
        for path in sensitive:
            careful.extend(parse_terms(_read(path)))
        return cls(blocked, careful)

    @classmethod
    def from_text(cls, text: str, sensitive: str = "") -> Blocklist:
        """Parse blocked and sensitive terms' text (as written by :meth:`to_text` and
        :meth:`sensitive_text`, or found in list files)."""
        return cls(parse_terms(text), parse_terms(sensitive))

    def to_text(self) -> str:
        """The blocked terms as text, one normalized term a line after a comment header; see :meth:`from_text`."""
        header = f"# qac blocklist: {len(self)} terms, sha256 {self.digest()}\n"
        return header + "".join(f"{t}\n" for t in self._blocked.terms)

    def sensitive_text(self) -> str:
        """The sensitive terms as text, like :meth:`to_text`."""
        terms = self._sensitive.terms
        header = f"# qac sensitive terms: {len(terms)} terms, sha256 {self._sensitive.digest()}\n"
        return header + "".join(f"{t}\n" for t in terms)

    def union(self, other: Blocklist) -> Blocklist:
        """A list with the terms of both, tier by tier."""
        return Blocklist(self.terms + other.terms, self.sensitive + other.sensitive)

    __or__ = union

    # -- inspection --------------------------------------------------------------------

    @property
    def terms(self) -> tuple[str, ...]:
        """The normalized blocked terms, sorted."""
        return self._blocked.terms

    @property
    def sensitive(self) -> tuple[str, ...]:
        """The normalized sensitive terms, sorted."""
        return self._sensitive.terms

    def __len__(self) -> int:
        """The number of blocked terms."""
        return len(self._blocked.terms)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Blocklist) and self.terms == other.terms
                and self.sensitive == other.sensitive)

    def __hash__(self) -> int:
        return hash((self.terms, self.sensitive))

    def __repr__(self) -> str:
        return (f"Blocklist({len(self)} terms, sha256 {self.digest()[:12]}; "
                f"{len(self.sensitive)} sensitive, sha256 {self.sensitive_digest()[:12]})")

    def digest(self) -> str:
        """SHA-256 hex of the sorted blocked terms, each followed by a newline, in UTF-8."""
        return self._blocked.digest()

    def sensitive_digest(self) -> str:
        """SHA-256 hex of the sorted sensitive terms, as :meth:`digest`."""
        return self._sensitive.digest()

    # -- matching ----------------------------------------------------------------------

    def blocks(self, query: str) -> bool:
        """Whether a normalized query contains a blocked term as whole, consecutive words."""
        return self._blocked.holds(skeleton_words(query))

    def blocks_prefix(self, prefix: str) -> bool:
        """Whether the complete words of a typed prefix contain a blocked term.

        The prefix is normalized here; its last word counts only when the prefix ends with a
        separator (whitespace or ``.``), since a partial word may still become another word.
        """
        words = normalize(prefix).split()
        if words and not (prefix[-1:].isspace() or prefix.endswith(".")):
            words.pop()
        return self._blocked.holds(skeleton_words(" ".join(words)))

    def hider(self, prefix: str) -> Callable[[str], bool]:
        """Whether a normalized suggestion must be hidden from someone who typed ``prefix``
        (normalized): it holds a blocked term, or a sensitive term that the prefix does not
        hold whole (its last word counts: ``naked`` may complete to ``naked news``)."""
        blocked, sensitive = self._blocked, self._sensitive
        typed = frozenset(sensitive.found(skeleton_words(normalize(prefix))))
        # Most texts share no word with any term: two set checks, no call.
        blocked_words, sensitive_words = blocked.words, sensitive.words

        def hidden(text: str) -> bool:
            words = skeleton_words(text)
            if not blocked_words.isdisjoint(words) and blocked.holds(words):
                return True
            return not sensitive_words.isdisjoint(words) and any(t not in typed for t in sensitive.found(words))

        return hidden

    def mask(self, queries: Sequence[str]) -> np.ndarray:
        """``blocks(q)`` for each normalized query, as a numpy bool array."""
        out = np.zeros(len(queries), dtype=bool)
        if not self._blocked.terms:
            return out
        holds = self._blocked.holds
        for i, q in enumerate(queries):
            out[i] = holds(skeleton_words(q))
        return out
