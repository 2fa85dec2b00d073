"""Counts learned from the log that generate and score candidates beyond the logged queries.

Three prefix indexes over sorted keys: words, word bigrams (``"w1 w2"``), and query
transitions (``"prev\\tnext"``): what followed what in a session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .topk import PrefixTopK, remember

TRANSITION_SEP = "\t"
# complete_word() answers remembered, at most: each holds up to 2 k words of its own.
COMPLETIONS_MEMO = 1 << 13


def counted_index(counts: Counter[str]) -> PrefixTopK:
    """A :class:`PrefixTopK` over the keys of ``counts``, weighted by count."""
    keys = sorted(counts)
    return PrefixTopK(keys, np.fromiter((counts[k] for k in keys), dtype=np.float64, count=len(keys)))


@dataclass
class WordModel:
    """Word unigrams, word bigrams and query transitions with their counts."""

    words: PrefixTopK
    bigrams: PrefixTopK
    transitions: PrefixTopK
    # The answers of complete_word() and followers(): most keystrokes ask what earlier ones did.
    _completions: dict[tuple[str, str, int], tuple[str, ...]] = field(default_factory=dict, init=False,
                                                                      repr=False, compare=False)
    _followers: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict, init=False, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        # Words and word pairs are looked up by the thousand, most of them absent when typed wrong.
        self.words.keep_members()
        self.bigrams.keep_members()

    @classmethod
    def from_counts(cls, words: Counter[str], bigrams: Counter[str], transitions: Counter[str]) -> WordModel:
        """Indexes over counted words, bigrams (``"w1 w2"``) and transitions (``"prev\\tnext"``)."""
        return cls(counted_index(words), counted_index(bigrams), counted_index(transitions))

    def complete_word(self, previous_word: str, partial: str, k: int) -> list[str]:
        """Up to ``2 k`` words starting with ``partial``: the ``k`` most frequent followers of
        ``previous_word`` first, then the ``k`` most frequent words."""
        found = self._completions.get((previous_word, partial, k))
        if found is None:
            found = remember(self._completions, (previous_word, partial, k),
                             self._complete_word(previous_word, partial, k), COMPLETIONS_MEMO)
        return list(found)

    def _complete_word(self, previous_word: str, partial: str, k: int) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        if previous_word:
            key = previous_word + " "
            for i in self.bigrams.top(key + partial, k):
                seen[self.bigrams.keys[i][len(key) :]] = None
        for i in self.words.top(partial, k):
            seen.setdefault(self.words.keys[i], None)
        return tuple(seen)

    def word_logps(self, words: Sequence[str], partial: str) -> np.ndarray:
        """log P(word | the word starts with ``partial``) under the unigram counts, per word."""
        return _logps(self.words, words, partial)

    def bigram_logps(self, previous_word: str, words: Sequence[str], partial: str) -> np.ndarray:
        """log P(word | previous word, word starts with ``partial``) from bigram counts."""
        key = previous_word + " "
        within = key + partial
        if not previous_word or not self.bigrams.total(within):  # no bigram to look up
            return np.full(len(words), LOG_FLOOR)
        return _logps(self.bigrams, [key + w for w in words], within)

    def followers(self, word: str, k: int) -> list[str]:
        """The ``k`` words that most often follow ``word``."""
        found = self._followers.get((word, k))
        if found is None:
            key = word + " "
            found = remember(self._followers, (word, k),
                             tuple(self.bigrams.keys[i][len(key) :] for i in self.bigrams.top(key, k)))
        return list(found)

    def next_queries(self, prev: str, prefix: str, k: int) -> list[tuple[str, float]]:
        """Queries that followed ``prev`` in a session and start with ``prefix``, with counts."""
        key = prev + TRANSITION_SEP
        t = self.transitions
        return [(t.keys[i][len(key) :], float(t.weights[i])) for i in t.top(key + prefix, k)]

    def transition_count(self, prev: str, nxt: str) -> float:
        """How often ``nxt`` directly followed ``prev`` in a session."""
        return self.transitions.count(prev + TRANSITION_SEP + nxt)

    def transition_counts(self, prev: str, nexts: Sequence[str]) -> np.ndarray:
        """:meth:`transition_count` of each of ``nexts``: looked up only among the
        transitions from ``prev`` (most queries have none)."""
        key = prev + TRANSITION_SEP
        lo, hi = self.transitions.range(key)
        if hi == lo:
            return np.zeros(len(nexts))
        return self.transitions.counts([key + q for q in nexts])


LOG_FLOOR = -20.0


def _logps(index: PrefixTopK, keys: Sequence[str], prefix: str) -> np.ndarray:
    total = index.total(prefix)
    found = index.count_list(keys, prefix) if total > 0 and keys else []
    # A corrected candidate's word need not start with the typed partial: at most log 1.
    if found and min(found) > 0:  # every key seen (checked on the list: a numpy call costs more)
        return np.minimum(0.0, np.log(np.array(found) / total))
    out = np.full(len(keys), LOG_FLOOR)
    if found and max(found) > 0:
        counts = np.array(found)
        seen = counts > 0
        out[seen] = np.minimum(0.0, np.log(counts[seen] / total))
    return out


def split_prefix(prefix: str) -> tuple[str, str, str]:
    """Split a normalized prefix into (head, previous word, partial last word).

    ``"new york ti"`` gives ``("new york ", "york", "ti")``; ``"new "`` gives
    ``("new ", "new", "")``.
    """
    cut = prefix.rfind(" ") + 1
    head = prefix[:cut]
    words = head.split()
    return head, (words[-1] if words else ""), prefix[cut:]

