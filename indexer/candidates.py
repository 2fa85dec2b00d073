"""Candidate generation: every query worth ranking for one keystroke, with its features.

Sources (docs/METHOD.md, "Generated candidates"): the label tree's beam, the most popular
logged completions, the typed prefix itself, the last partial word completed from the word model (and one word
further), queries that followed the previous query in the log, and the session's own
queries and words. Features are computed for every candidate whatever its source, so the
reranker sees one uniform table.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .params import SOURCES
from .personal import PersonalHistory
from .topk import PrefixTopK
from .wordmodel import WordModel, split_prefix

FEATURES = (
    "bias",
    "log_count",
    "is_label",
    "mpc_rr",
    "tree_score",
    "tree_rr",
    "src_prefix",
    "src_word",
    "src_cont",
    "src_session",
    "src_trans",
    "in_history",
    "trans_log",
    "word_logp",
    "bigram_logp",
    "coverage",
    "extra_words",
    "overlap_prev",
    "overlap_history",
    "changes_partial",
    "src_personal",
    "own_log_count",
    "own_recency",
)
_F = {name: i for i, name in enumerate(FEATURES)}
N_BASE = len(FEATURES)
IS_LABEL = _F["is_label"]
# Prefix-length buckets: the scorer has one weight vector per bucket, so it can trust the
# typed prefix more when it is long and popularity more when it is short.
BUCKET_EDGES = (3, 6, 10)
N_BUCKETS = len(BUCKET_EDGES) + 1


# (prefix, prev, label range) -> (label ids, scores), best first.
TreeSearch = Callable[[str, str, tuple[int, int]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates each source offers."""

    mpc_k: int = 20
    tree_k: int = 20
    word_k: int = 10
    cont_k: int = 3
    trans_k: int = 10
    history_max: int = 5
    personal_k: int = 10
    sources: tuple[str, ...] = SOURCES


@dataclass
class Candidates:
    """The candidates of one keystroke, their feature rows and the keystroke's length bucket."""

    texts: list[str]
    features: np.ndarray  # (len(texts), N_BASE)
    bucket: int


def bucket_of(prefix_length: int) -> int:
    """The prefix-length bucket a keystroke falls in."""
    return bisect_right(BUCKET_EDGES, prefix_length)


class CandidateGenerator:
    """Gathers and featurizes candidates from the label index, the word model and the tree."""

    def __init__(
        self,
        labels: PrefixTopK,
        words: WordModel,
        tree: TreeSearch | None = None,
        config: CandidateConfig | None = None,
    ):
        self.labels = labels
        self.words = words
        self.tree = tree
        self.config = config or CandidateConfig()

    def generate(
        self, prefix: str, history: Sequence[str] = (), personal: PersonalHistory | None = None
    ) -> Candidates:
        """All candidates for normalized ``prefix`` after ``history`` (newest last), with the
        user's own past queries from ``personal``."""
        cfg = self.config
        on = set(cfg.sources)
        if "personal" not in on:
            personal = None
        history = [h for h in history if h][-cfg.history_max :]
        prev = history[-1] if history else ""
        head, prev_word, partial = split_prefix(prefix)
        rows: dict[str, np.ndarray] = {}
        label_ids: dict[str, int] = {}  # candidates known to be labels: their index

        def add(text: str) -> np.ndarray:
            row = rows.get(text)
            if row is None:
                row = rows[text] = np.zeros(N_BASE)
            return row

        labels = self.labels
        lo, hi = labels.range(prefix)
        if "mpc" in on:
            for rank, i in enumerate(labels.top_range(lo, hi, cfg.mpc_k)):
                label_ids[labels.keys[i]] = i
                add(labels.keys[i])[_F["mpc_rr"]] = 1.0 / (rank + 1)
        if "tree" in on and self.tree is not None and hi > lo:
            ids, scores = self.tree(prefix, prev, (lo, hi))
            for rank, (i, s) in enumerate(zip(ids[: cfg.tree_k].tolist(), scores.tolist())):
                label_ids[labels.keys[i]] = i
                row = add(labels.keys[i])
                row[_F["tree_score"]] = s
                row[_F["tree_rr"]] = 1.0 / (rank + 1)
        if "prefix" in on and partial:
            add(prefix)[_F["src_prefix"]] = 1.0
        if "word" in on:
            completed = self.words.complete_word(prev_word, partial, cfg.word_k)
            for rank, w in enumerate(completed):
                add(head + w)[_F["src_word"]] = 1.0
                if rank < cfg.cont_k:
                    for f in self.words.followers(w, cfg.cont_k):
                        add(head + w + " " + f)[_F["src_cont"]] = 1.0
        if "transitions" in on and prev:
            for q, _ in self.words.next_queries(prev, prefix, cfg.trans_k):
                add(q)[_F["src_trans"]] = 1.0
        if "session" in on:
            for text in _session_candidates(history, prefix, head, partial):
                add(text)[_F["src_session"]] = 1.0
        if personal:
            for text in personal.starting_with(prefix, cfg.personal_k):
                add(text)[_F["src_personal"]] = 1.0

        texts = list(rows)
        base = np.array([rows[t] for t in texts]) if texts else np.zeros((0, N_BASE))
        # A label that starts with the prefix lies in [lo, hi).
        found = [label_ids[t] if t in label_ids else labels.index(t, lo, hi) if t.startswith(prefix)
                 else labels.index(t) for t in texts]
        self._generic_features(base, texts, found, prefix, head, prev_word, partial, prev, history)
        if personal:
            for j, text in enumerate(texts):
                base[j, _F["own_log_count"]], base[j, _F["own_recency"]] = personal.features(text)
        return Candidates(texts, base, bucket_of(len(prefix)))

    def _generic_features(
        self,
        base: np.ndarray,
        texts: list[str],
        label_ids: list[int],
        prefix: str,
        head: str,
        prev_word: str,
        partial: str,
        prev: str,
        history: Sequence[str],
    ) -> None:
        if not texts:
            return
        words = self.words
        prev_words = set(prev.split())
        hist_words = {w for h in history for w in h.split()}
        hist_set = set(history)
        cut = len(head)
        ids = np.array(label_ids)
        counts = np.where(ids >= 0, self.labels.weights[ids], 0.0)
        base[:, _F["bias"]] = 1.0
        base[:, _F["log_count"]] = np.log1p(counts)
        base[:, _F["is_label"]] = counts > 0
        base[:, _F["coverage"]] = len(prefix) / np.array([len(t) for t in texts])
        completed = [t[cut:].split(" ", 1)[0] for t in texts]
        base[:, _F["word_logp"]] = words.word_logps(completed, partial)
        base[:, _F["bigram_logp"]] = words.bigram_logps(prev_word, completed, partial)
        if prev:
            base[:, _F["trans_log"]] = np.log1p([words.transition_count(prev, t) for t in texts])
        head_words = head.count(" ")
        for j, text in enumerate(texts):
            toks = text.split(" ")
            row = base[j]
            row[_F["in_history"]] = text in hist_set
            row[_F["extra_words"]] = len(toks) - head_words - 1
            if prev_words:
                row[_F["overlap_prev"]] = len(prev_words.intersection(toks)) / len(toks)
            if hist_words:
                row[_F["overlap_history"]] = len(hist_words.intersection(toks)) / len(toks)
            row[_F["changes_partial"]] = completed[j] != partial


def _session_candidates(history: Sequence[str], prefix: str, head: str, partial: str) -> list[str]:
    """Earlier queries that start with the prefix, and the prefix finished with their words.

    For ``"salem r"`` after ``"oregon running calendar"``: ``"salem running"`` and
    ``"salem running calendar"`` (a reformulation keeps the tail of the last query).
    """
    out = []
    for h in reversed(history):
        if h.startswith(prefix):
            out.append(h)
        toks = h.split(" ")
        for j, w in enumerate(toks):
            if w.startswith(partial):
                out.append(head + w)
                if j + 1 < len(toks):
                    out.append(head + " ".join(toks[j:]))
    return out
