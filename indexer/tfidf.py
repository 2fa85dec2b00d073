"""Prefix-weighted character n-gram TF-IDF features (docs/METHOD.md, "Features").

An input vector is ``[prefix block, prev_weight * previous-query block]`` re-normalized to
unit length. The prefix block counts each character n-gram occurrence with a weight that
depends on where it starts, times a smoothed IDF learned from the labels; the previous-query
block is word-unigram TF-IDF with an IDF learned from the previous queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .topk import remember

WEIGHTINGS = ("none", "string", "word")

# A block: sorted feature indices, L2-normalized values (float64), sum of squared values.
Block = tuple[np.ndarray, np.ndarray, float]

_EMPTY_IDX = np.zeros(0, dtype=np.int32)
_EMPTY_VAL = np.zeros(0, dtype=np.float64)
_EMPTY_BLOCK: Block = (_EMPTY_IDX, _EMPTY_VAL, 0.0)
# Blocks that transform_one remembers, per kind, at most (then it starts over): a session's
# keystrokes share their previous query, and many users type the same prefixes.
BLOCK_MEMO = 8192


def start_weights(text: str, weighting: str) -> list[float]:
    """Weight of an n-gram occurrence starting at each character offset of ``text``.

    ``"string"``: 1/(i+1) for offset i in the string. ``"word"``: 1/(j+1) for offset j in
    the current word, where a space belongs to the word it ends and the character after it
    starts a new word at j = 0. ``"none"``: 1.
    """
    if weighting == "string":
        return [1.0 / (i + 1) for i in range(len(text))]
    if weighting == "word":
        out = []
        j = 0
        for ch in text:
            out.append(1.0 / (j + 1))
            j = 0 if ch == " " else j + 1
        return out
    if weighting == "none":
        return [1.0] * len(text)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def position_weights(text: str, weighting: str = "string", ngram_max: int = 3) -> dict[str, float]:
    """Raw (pre-IDF) weight of every character n-gram (1..ngram_max) of ``text``.

    ``position_weights("nik")`` is ``{"n": 1, "i": 1/2, "k": 1/3, "ni": 1, "ik": 1/2,
    "nik": 1}``.
    """
    out: dict[str, float] = {}
    n = len(text)
    for i, w in enumerate(start_weights(text, weighting)):
        for k in range(1, min(ngram_max, n - i) + 1):
            g = text[i : i + k]
            out[g] = out.get(g, 0.0) + w
    return out


def _document_frequencies(docs: Sequence[set[str]]) -> dict[str, int]:
    df: dict[str, int] = {}
    for terms in docs:
        for t in terms:
            df[t] = df.get(t, 0) + 1
    return df


def _vocab_idf(df: Mapping[str, int], n_docs: int, min_df: int) -> tuple[list[str], np.ndarray]:
    terms = sorted(t for t, c in df.items() if c >= min_df)
    counts = np.array([df[t] for t in terms], dtype=np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + counts)) + 1.0
    return terms, idf


def _normalized_block(acc: dict[int, float]) -> Block:
    """Sorted indices and L2-normalized values of an accumulated {index: weight} dict."""
    if not acc:
        return _EMPTY_BLOCK
    keys = sorted(acc)
    vals = [acc[j] for j in keys]
    norm = math.sqrt(sum(v * v for v in vals))
    if norm == 0.0:
        return _EMPTY_BLOCK
    vals = [v / norm for v in vals]
    sq = sum(v * v for v in vals)
    return np.array(keys, dtype=np.int32), np.array(vals, dtype=np.float64), sq


class NotFittedError(ValueError, AttributeError):
    """A featurizer used before ``fit()`` or ``from_arrays()``, as scikit-learn's exception of that
    name (not imported from it: a serving process would load scikit-learn for one class)."""


class PrefixFeaturizer:
    """Turns (prefix, previous query) pairs into sparse unit vectors.

    Parameters: ``weighting`` of n-gram occurrences by start position ("none", "string",
    "word"), ``prev_weight`` of the previous-query block, ``ngram_max`` (character n-grams
    1..ngram_max), ``min_df`` (minimum document frequency of a kept n-gram or word).
    """

    def __init__(
        self,
        weighting: str = "string",
        prev_weight: float = 0.5,
        ngram_max: int = 3,
        min_df: int = 1,
    ) -> None:
        self.weighting = weighting
        self.prev_weight = prev_weight
        self.ngram_max = ngram_max
        self.min_df = min_df

    # ---- parameters and fitted state -------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as a JSON-ready dict."""
        return {
            "weighting": self.weighting,
            "prev_weight": float(self.prev_weight),
            "ngram_max": int(self.ngram_max),
            "min_df": int(self.min_df),
        }

    def _validate_params(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not (isinstance(self.ngram_max, int | np.integer) and self.ngram_max >= 1):
            raise ValueError(f"ngram_max must be an integer >= 1, got {self.ngram_max!r}")
        if not (isinstance(self.min_df, int | np.integer) and self.min_df >= 1):
            raise ValueError(f"min_df must be an integer >= 1, got {self.min_df!r}")
        if not (math.isfinite(self.prev_weight) and self.prev_weight >= 0):
            raise ValueError(f"prev_weight must be a finite number >= 0, got {self.prev_weight!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "gram_idf_"):
            raise NotFittedError("PrefixFeaturizer is not fitted: call fit() or from_arrays()")

    def _set_state(
        self, grams: Sequence[str], gram_idf: np.ndarray, words: Sequence[str], word_idf: np.ndarray
    ) -> None:
        self.gram_vocabulary_ = {g: i for i, g in enumerate(grams)}
        self.gram_idf_ = np.asarray(gram_idf, dtype=np.float64)
        self.word_vocabulary_ = {w: i for i, w in enumerate(words)}
        self.word_idf_ = np.asarray(word_idf, dtype=np.float64)
        # Lean lookups for the per-keystroke path: string -> (index, idf) as Python objects.
        self._gram_lookup = {
            g: (i, float(v)) for (g, i), v in zip(self.gram_vocabulary_.items(), self.gram_idf_, strict=True)
        }
        self._word_lookup = {
            w: (i, float(v)) for (w, i), v in zip(self.word_vocabulary_.items(), self.word_idf_, strict=True)
        }
        self._n_grams = len(grams)
        self._blocks: dict[tuple[bool, str], Block] = {}  # (is prefix, text) -> block, for transform_one

    @property
    def n_features_(self) -> int:
        """Width of an input vector: n-gram vocabulary plus word vocabulary."""
        self._check_fitted()
        return len(self.gram_vocabulary_) + len(self.word_vocabulary_)

    @property
    def n_prefix_features_(self) -> int:
        """Width of the prefix block (and of :meth:`embed` rows)."""
        self._check_fitted()
        return len(self.gram_vocabulary_)

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], prevs: Sequence[str]) -> PrefixFeaturizer:
        """Learn the n-gram vocabulary and IDF from ``texts`` and the word ones from ``prevs``."""
        self._validate_params()
        n = self.ngram_max
        gram_df = _document_frequencies(
            [{t[i : i + k] for k in range(1, n + 1) for i in range(len(t) - k + 1)} for t in texts]
        )
        word_df = _document_frequencies([set(p.split()) for p in prevs])
        grams, gram_idf = _vocab_idf(gram_df, len(texts), self.min_df)
        words, word_idf = _vocab_idf(word_df, len(prevs), self.min_df)
        self._set_state(grams, gram_idf, words, word_idf)
        return self

    # ---- blocks ----------------------------------------------------------------------------

    def _prefix_block(self, text: str) -> Block:
        lookup = self._gram_lookup
        n = len(text)
        nmax = self.ngram_max
        acc: dict[int, float] = {}
        for i, w in enumerate(start_weights(text, self.weighting)):
            for k in range(1, min(nmax, n - i) + 1):
                hit = lookup.get(text[i : i + k])
                if hit is not None:
                    j, idf = hit
                    acc[j] = acc.get(j, 0.0) + w * idf
        return _normalized_block(acc)

    def _prev_block(self, prev: str) -> Block:
        lookup = self._word_lookup
        acc: dict[int, float] = {}
        for word in prev.split():
            hit = lookup.get(word)
            if hit is not None:
                j, idf = hit
                acc[j] = acc.get(j, 0.0) + idf
        return _normalized_block(acc)

    def _row_scale(self, p_sq: float, q_sq: float) -> float:
        """1 / length of ``[p, prev_weight * q]``, or 0 for an empty vector."""
        w = float(self.prev_weight)
        total = p_sq + (w * w) * q_sq
        return 1.0 / math.sqrt(total) if total > 0.0 else 0.0

    # ---- transforming ----------------------------------------------------------------------

    def _memo_block(self, is_prefix: bool, text: str) -> Block:
        """:meth:`_prefix_block` (or :meth:`_prev_block`) of ``text``, remembered; read-only."""
        block = self._blocks.get((is_prefix, text))
        if block is None:
            block = self._prefix_block(text) if is_prefix else self._prev_block(text)
            block[0].flags.writeable = False
            block[1].flags.writeable = False
            remember(self._blocks, (is_prefix, text), block, BLOCK_MEMO)
        return block

    def transform_one(self, prefix: str, prev: str = "") -> tuple[np.ndarray, np.ndarray]:
        """One input vector as (sorted int32 indices, float32 values); the serving fast path."""
        self._check_fitted()
        p_idx, p_val, p_sq = self._memo_block(True, prefix)
        q_idx, q_val, q_sq = self._memo_block(False, prev) if prev else _EMPTY_BLOCK
        scale = self._row_scale(p_sq, q_sq)
        if scale == 0.0:
            return _EMPTY_IDX, np.zeros(0, dtype=np.float32)
        if self.prev_weight == 0 or not len(q_idx):
            return p_idx, (p_val * scale).astype(np.float32)
        idx = np.concatenate((p_idx, q_idx + np.int32(self._n_grams)))
        val = np.concatenate((p_val * scale, (q_val * float(self.prev_weight)) * scale))
        return idx, val.astype(np.float32)

    def transform(self, prefixes: Sequence[str], prevs: Sequence[str]) -> sp.csr_matrix:
        """Input vectors of a batch, as a float32 CSR matrix (n, n_features_)."""
        self._check_fitted()
        if len(prefixes) != len(prevs):
            raise ValueError(f"prefixes and prevs differ in length: {len(prefixes)} != {len(prevs)}")
        p_ids, p_blocks = _distinct_blocks(prefixes, self._prefix_block)
        q_ids, q_blocks = _distinct_blocks(prevs, self._prev_block)
        w = float(self.prev_weight)
        if w == 0:
            q_blocks = [_EMPTY_BLOCK] * len(q_blocks)
        p_ptr, p_idx, p_val, p_sq = _stack_blocks(p_blocks)
        q_ptr, q_idx, q_val, q_sq = _stack_blocks(q_blocks)
        total = p_sq[p_ids] + (w * w) * q_sq[q_ids]
        scale = np.zeros(len(total))
        pos = total > 0
        scale[pos] = 1.0 / np.sqrt(total[pos])
        # Rows are [prefix block, prev block]: gather both ragged segments, then interleave.
        p_len = np.diff(p_ptr)[p_ids] * pos
        q_len = np.diff(q_ptr)[q_ids] * pos
        p_pos = ragged_positions(p_ptr[p_ids], p_len)
        q_pos = ragged_positions(q_ptr[q_ids], q_len)
        row_len = p_len + q_len
        indptr = np.zeros(len(total) + 1, dtype=np.int64)
        np.cumsum(row_len, out=indptr[1:])
        in_p = ragged_positions(indptr[:-1], p_len)
        in_q = ragged_positions(indptr[:-1] + p_len, q_len)
        indices = np.empty(indptr[-1], dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float64)
        indices[in_p] = p_idx[p_pos]
        indices[in_q] = q_idx[q_pos] + self._n_grams
        data[in_p] = p_val[p_pos] * np.repeat(scale, p_len)
        data[in_q] = (q_val[q_pos] * w) * np.repeat(scale, q_len)
        shape = (len(total), self.n_features_)
        return sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=shape)

    def embed(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The prefix block of each full text, L2-normalized: (n, n_prefix_features_) float32."""
        self._check_fitted()
        ids, blocks = _distinct_blocks(texts, self._prefix_block)
        ptr, idx, val, _ = _stack_blocks(blocks)
        m = sp.csr_matrix((val.astype(np.float32), idx, ptr), shape=(len(blocks), self._n_grams))
        return m[ids]

    # ---- persistence -----------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as plain numpy arrays (unicode vocabularies), for ``np.savez``."""
        self._check_fitted()
        return {
            "gram_vocab": np.array(list(self.gram_vocabulary_), dtype=np.str_),
            "gram_idf": self.gram_idf_,
            "word_vocab": np.array(list(self.word_vocabulary_), dtype=np.str_),
            "word_idf": self.word_idf_,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], params: dict[str, Any]) -> PrefixFeaturizer:
        """Rebuild a fitted featurizer from :meth:`to_arrays` output and :meth:`get_params`."""
        obj = cls(**params)
        obj._validate_params()
        missing = {"gram_vocab", "gram_idf", "word_vocab", "word_idf"} - set(arrays)
        if missing:
            raise ValueError(f"featurizer arrays lack {sorted(missing)}")
        grams = [str(g) for g in arrays["gram_vocab"].tolist()]
        words = [str(w) for w in arrays["word_vocab"].tolist()]
        if len(grams) != len(arrays["gram_idf"]) or len(words) != len(arrays["word_idf"]):
            raise ValueError("featurizer arrays: vocabulary and idf lengths differ")
        obj._set_state(grams, arrays["gram_idf"], words, arrays["word_idf"])
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"PrefixFeaturizer({args})"


def _distinct_blocks(texts: Sequence[str], block_of: Any) -> tuple[np.ndarray, list[Block]]:
    """Block of each distinct text (computed once) and the distinct id of every text."""
    seen: dict[str, int] = {}
    ids = np.fromiter((seen.setdefault(t, len(seen)) for t in texts), dtype=np.int64, count=len(texts))
    return ids, [block_of(t) for t in seen]


def _stack_blocks(blocks: Sequence[Block]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate blocks CSR-style: (indptr, indices, values, squared norms)."""
    lens = np.fromiter((len(b[0]) for b in blocks), dtype=np.int64, count=len(blocks))
    ptr = np.zeros(len(blocks) + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    idx = np.concatenate([b[0] for b in blocks] + [_EMPTY_IDX])
    val = np.concatenate([b[1] for b in blocks] + [_EMPTY_VAL])
    sq = np.fromiter((b[2] for b in blocks), dtype=np.float64, count=len(blocks))
    return ptr, idx, val, sq


def ragged_positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return shift + np.arange(total, dtype=np.int64)
