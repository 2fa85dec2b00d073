"""Typos: how far a typed prefix is from a candidate, what a misspelled word or partial word
probably meant, and the synthetic typos that training and evaluation put into prefixes.

See docs/METHOD.md, "Typo tolerance". The first character of what was typed is taken as
exact (as Elasticsearch's fuzzy queries do by default): it halves the variants to look up,
and a slip on the first key is the rarest.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from functools import lru_cache

import numpy as np

from .normalize import normalize_prefix
from .topk import PrefixTopK

# Keys next to each key on a QWERTY keyboard (same row, and the rows above and below).
_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_OFFSETS = (0, 0, 1, 2)  # each row's stagger, in half keys: a sits between q and w


def _qwerty_neighbours() -> dict[str, str]:
    pos = {c: (r, 2 * i + _OFFSETS[r]) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    out: dict[str, str] = {}
    for c, (r, x) in pos.items():
        out[c] = "".join(d for d, (r2, x2) in pos.items()
                         if d != c and abs(r2 - r) <= 1 and abs(x2 - x) <= (2 if r2 == r else 1))
    out[" "] = "cvbnm"  # the space bar's row
    return out


NEIGHBOURS = _qwerty_neighbours()
# Two thresholds, for two things: what is corrected, and where synthetic typos go.
CORRECTED_MIN_CHARS = 4  # a shorter prefix, word or partial word is never corrected
SYNTHETIC_TYPO_MIN_CHARS = 5  # typos go into prefixes this long (`qac eval --typos`, the scorer's training)


def max_edits(length: int) -> int:
    """Edits tolerated in a typed text of ``length`` characters: 1 from
    :data:`CORRECTED_MIN_CHARS` (4), 2 from 8 (Algolia's default), 0 below."""
    return 0 if length < CORRECTED_MIN_CHARS else 1 if length < 8 else 2


def add_typo(prefix: str, rng: np.random.Generator) -> str:
    """``prefix`` with one keyboard slip at a uniformly drawn position after the first
    character: a QWERTY neighbour substituted, the character dropped, a neighbour inserted
    or the character doubled, or two adjacent characters swapped (the kind drawn uniformly).
    The result normalizes to something other than ``prefix``; a prefix under 2 characters
    is returned as it is."""
    n = len(prefix)
    if n < 2:
        return prefix
    for _ in range(20):
        i = int(rng.integers(1, n))
        kind = int(rng.integers(4))
        c = prefix[i]
        near = NEIGHBOURS.get(c) or "aeiou"
        if kind == 0:
            out = prefix[:i] + near[int(rng.integers(len(near)))] + prefix[i + 1 :]
        elif kind == 1:
            out = prefix[:i] + prefix[i + 1 :]
        elif kind == 2:
            extra = c if rng.random() < 0.5 else near[int(rng.integers(len(near)))]
            out = prefix[:i] + extra + prefix[i:]
        else:
            j = i if i + 1 < n else i - 1
            if j < 1:
                continue
            out = prefix[:j] + prefix[j + 1] + prefix[j] + prefix[j + 2 :]
        if normalize_prefix(out) != normalize_prefix(prefix) and normalize_prefix(out):
            return out
    return prefix


def _lcp(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_distance(typed: str, text: str, limit: int = 2) -> int:
    """Damerau (optimal string alignment) distance from ``typed`` to the closest prefix of
    ``text``, a swap of adjacent characters counting as one edit; ``limit + 1`` when it is
    more than ``limit``. 0 when ``text`` starts with ``typed``."""
    if text.startswith(typed):
        return 0
    if limit <= 0:
        return 1
    i = _lcp(typed, text)
    a, b = typed[i:], text[i:]
    if not b:  # text ended: the rest of typed is extra
        return len(a) if len(a) <= limit else limit + 1
    a1, b1 = a[1:], b[1:]
    if limit == 1:  # the common case, without recursion
        if b1.startswith(a1) or b.startswith(a1) or b1.startswith(a):
            return 1
        return 1 if len(a) > 1 and a[0] == b1[:1] and a[1] == b[0] and b[2:].startswith(a[2:]) else 2
    best = limit + 1
    for x, y in ((a1, b1), (a1, b), (a, b1)):  # substitute, typed extra, typed missing
        d = prefix_distance(x, y, min(limit, best) - 1) + 1
        if d < best:
            best = d
            if best == 1:
                return 1
    if len(a) > 1 and len(b) > 1 and a[0] == b[1] and a[1] == b[0]:
        best = min(best, prefix_distance(a[2:], b[2:], min(limit, best) - 1) + 1)
    return best


def prefix_distances(typed: str, texts: Sequence[str], limit: int = 2) -> np.ndarray:
    """:func:`prefix_distance` of each text, as floats: one optimal-string-alignment table
    for all texts at once, a numpy step per typed character (for tests and batches; one
    keystroke's few texts are faster with :func:`prefix_distance`)."""
    n, m = len(texts), len(typed)
    if not n:
        return np.zeros(0)
    width = m + limit
    # Texts cut or padded (with NUL, which nothing typed holds) to the longest prefix that can
    # be within limit: one row of code points each.
    b = np.frombuffer("".join(t[:width].ljust(width, "\0") for t in texts).encode("utf-32-le"),
                      dtype=np.uint32).reshape(n, width)
    a = np.frombuffer(typed.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(width + 1)
    before = None
    row = np.broadcast_to(steps, (n, width + 1)).astype(np.int32)
    for i in range(1, m + 1):
        cur = np.empty_like(row)
        cur[:, 0] = i
        np.minimum(row[:, 1:] + 1, row[:, :-1] + (b != a[i - 1]), out=cur[:, 1:])
        if before is not None and width > 1:
            swap = (b[:, :-1] == a[i - 1]) & (b[:, 1:] == a[i - 2])
            cur[:, 2:] = np.where(swap, np.minimum(cur[:, 2:], before[:, :-2] + 1), cur[:, 2:])
        before, row = row, (np.minimum.accumulate(cur - steps, axis=1) + steps).astype(np.int32)
    return np.minimum(row.min(axis=1), limit + 1).astype(np.float64)


_MAX_CHAR = "\U0010ffff"


def one_edit_variants(index: PrefixTopK, text: str, whole: bool = False, keep_first: bool = True,
                      at: tuple[int, int] | None = None) -> list[str]:
    """The one-edit variants of ``text`` (its first character kept, unless not
    ``keep_first``) that start some key of ``index`` or, with ``whole``, are one of its keys;
    with ``at = (first, last)``, only those edited at an offset from ``first`` to ``last``.

    It walks the sorted keys as a trie: an edit at offset i needs a key starting with
    ``text[:i]``, and only characters that follow ``text[:i]`` in some key are tried, so a
    lookup costs a few binary searches per character of ``text``, not one per variant.
    When the index keeps its keys as a set too (:meth:`PrefixTopK.keep_members`), a ``whole``
    lookup makes a set test per variant instead.
    """
    offsets = range(0 if not keep_first else 1, len(text) + 1)
    if at is not None:
        offsets = range(max(offsets.start, at[0]), min(offsets.stop, at[1] + 1))
    if whole and index.members is not None:
        return _whole_variants(index, text, offsets, index.members)
    keys = index.keys
    out: dict[str, None] = {}

    def check(v: str, lo: int, hi: int) -> None:  # is v (the start of) a key in [lo, hi)?
        j = bisect_left(keys, v, lo, hi)
        if j < hi and (keys[j] == v if whole else keys[j].startswith(v)):
            out[v] = None

    for i in offsets:
        left, right = text[:i], text[i:]
        lo, hi, nexts, starts = index.children(left)
        if lo >= hi:
            break  # every variant edited at i or later starts with left
        first = right[:1]
        rest = right[1:]
        # Variants with a character c after left lie among the keys of c, [starts[n], starts[n + 1]).
        for n, c in enumerate(nexts):  # a character missing from text
            if c != first:
                check(left + c + right, starts[n], starts[n + 1])
        if right:
            for n, c in enumerate(nexts):  # a wrong character
                if c != first:
                    check(left + c + rest, starts[n], starts[n + 1])
            check(left + rest, lo, hi)  # an extra character
            if len(right) > 1 and right[0] != right[1]:
                check(left + right[1] + right[0] + right[2:], lo, hi)  # a swap
    out.pop(text, None)
    return list(out)


def _whole_variants(index: PrefixTopK, text: str, offsets: range, members: AbstractSet[str]) -> list[str]:
    """:func:`one_edit_variants` of a ``whole`` lookup, in the same order, each variant
    tested against ``members``: a crafted word costs a few set tests per character, not a
    binary search each (docs/METHOD.md, "Typo tolerance")."""
    out: dict[str, None] = {}
    for i in offsets:
        left, right = text[:i], text[i:]
        lo, hi, nexts, _ = index.children(left)
        if lo >= hi:
            break
        first = right[:1]
        rest = right[1:]
        tried = [left + c + right for c in nexts if c != first]
        if right:
            tried += [left + c + rest for c in nexts if c != first]
            tried.append(left + rest)
            if len(right) > 1 and right[0] != right[1]:
                tried.append(left + right[1] + right[0] + right[2:])
        out.update((v, None) for v in tried if v in members)
    out.pop(text, None)
    return list(out)


class WordCorrector:
    """What a misspelled word or partial word meant, from the word counts of the log.

    ``correct`` replaces a whole word that the vocabulary lacks (or barely knows) by the most
    frequent word within one edit that is ``ratio`` times more frequent; ``partials`` finds
    the word prefixes within one edit of a partial word that ``ratio`` times more weight of
    words starts with. Thread-safe (read-only).
    """

    def __init__(self, words: PrefixTopK, bigrams: PrefixTopK | None = None, ratio: float = 10.0,
                 cache: int = 8192):
        self.words = words
        self.bigrams = bigrams
        self.ratio = ratio
        # A user types one word over several keystrokes, and typos repeat: remember answers.
        self.correct = lru_cache(cache)(self._correct)  # type: ignore[method-assign]
        self.partials = lru_cache(cache)(self._partials)  # type: ignore[method-assign]
        self.spans = lru_cache(cache)(self._spans)  # type: ignore[method-assign]
        self.pairs = lru_cache(cache)(self._pairs)  # type: ignore[method-assign]

    def _spans(self, span: str, k: int = 2) -> list[str]:
        """Up to ``k`` starts of word bigrams within one edit of ``span`` (one or two words,
        the last maybe partial; a space moved, dropped or added counts as an edit) under which
        ``ratio`` times the weight of bigrams starts, heaviest first."""
        bigrams = self.bigrams
        if bigrams is None or len(span) < 4:
            return []
        floor = max(1.0, bigrams.total(span) * self.ratio)
        found = [(t, v) for v in one_edit_variants(bigrams, span) if " " in v.strip()
                 and (t := bigrams.total(v)) >= floor]
        found.sort(key=lambda tv: (-tv[0], tv[1]))
        return [v for _, v in found[:k]]

    def _pairs(self, pair: str, keep_first: bool = True, unknown: int | None = None) -> list[str]:
        """Word bigrams within one edit of the two whole words ``pair`` (a space moved,
        dropped or added included) that ``ratio`` times more people typed, heaviest first.

        ``unknown``: which word (0 or 1) the vocabulary lacks. Every word of a bigram is in the
        vocabulary (whoever typed the pair typed its words), so the edit must touch that word
        or the space next to it: only those offsets are looked up."""
        bigrams = self.bigrams
        if bigrams is None or len(pair) < 5:
            return []
        space = pair.find(" ")
        at = None if unknown is None else (space - 1, len(pair)) if unknown == 1 else (0, space)
        floor = max(1.0, bigrams.count(pair) * self.ratio)
        found = [(c, v) for v in one_edit_variants(bigrams, pair, whole=True, keep_first=keep_first, at=at)
                 if (c := bigrams.count(v)) >= floor]
        found.sort(key=lambda cv: (-cv[0], cv[1]))
        return [v for _, v in found[:1]]

    def splits(self, word: str, k: int = 1, whole: bool = False) -> list[str]:
        """``word`` as two words, a space added or put for one of its characters: the first
        a known word, the second a known word (or, unless ``whole``, the start of one);
        heaviest first."""
        words = self.words
        if len(word) < 5 or (words.count(word) if whole else words.total(word)) > 0:
            return []
        found = []
        for i in range(2, len(word) - 1):
            left = word[:i]
            if not words.count(left):
                continue
            for right in (word[i:], word[i + 1 :]):
                if len(right) > 1 and (t := words.count(right) if whole else words.total(right)):
                    found.append((min(words.count(left), t), left + " " + right))
        found.sort(key=lambda tv: (-tv[0], tv[1]))
        return [v for _, v in found[:k]]

    def _correct(self, word: str, keep_first: bool = True) -> str | None:
        """The most frequent word within one edit of ``word`` that is ``ratio`` times more
        frequent than it, or None. Its first character may change unless ``keep_first``."""
        if len(word) < CORRECTED_MIN_CHARS:
            return None
        words = self.words
        own = words.count(word)
        best, best_count = None, own * self.ratio if own else 1.0
        for v in one_edit_variants(words, word, whole=True, keep_first=keep_first):
            c = words.count(v)
            if c >= best_count:
                best, best_count = v, c
        return best

    def _partials(self, partial: str, k: int = 3, keep_first: bool = True) -> list[str]:
        """Up to ``k`` word prefixes within one edit of ``partial`` under which the vocabulary
        holds ``ratio`` times the weight it holds under ``partial``, heaviest first."""
        if len(partial) < CORRECTED_MIN_CHARS:
            return []
        words = self.words
        floor = max(1.0, words.total(partial) * self.ratio)
        found = [(t, v) for v in one_edit_variants(words, partial, keep_first=keep_first)
                 if (t := words.total(v)) >= floor]
        found.sort(key=lambda tv: (-tv[0], tv[1]))
        out: list[str] = []
        for _, v in found:
            if not any(v.startswith(u) for u in out):  # a longer variant adds nothing
                out.append(v)
            if len(out) == k:
                break
        return out


def session_fixes(word: str, vocabulary: Iterable[str], whole: bool, keep_first: bool = True) -> list[str]:
    """Words of ``vocabulary`` (the session's own) within one edit of ``word``, not starting
    with it: as a whole word, or (not ``whole``) of which ``word`` is a misspelled start."""
    if len(word) < CORRECTED_MIN_CHARS:
        return []
    first = word[0]
    vocabulary = [v for v in vocabulary if v[:1] == first or not keep_first]
    if whole:
        typed = word + " "
        return sorted(v for v in vocabulary if v != word and prefix_distance(typed, v + " ", 1) == 1)
    return sorted(v for v in vocabulary if not v.startswith(word) and prefix_distance(word, v, 1) == 1)
