"""Candidate generation: every query worth ranking for one keystroke, with its features.

Sources (docs/METHOD.md, "Generated candidates"): the label tree's beam, the most popular
logged completions, the typed prefix itself, the last partial word completed from the word model (and one word
further), queries that followed the previous query in the log, and the session's own
queries and words. Features are computed for every candidate whatever its source, so the
scorer sees one uniform table.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .normalize import MAX_QUERY_CHARS, normalize
from .params import SOURCES
from .personal import PersonalHistory, QueryWords, Vocabulary, query_words
from .topk import PrefixTopK
from .typos import CORRECTED_MIN_CHARS, WordCorrector, max_edits, one_edit_variants, prefix_distance, session_fixes
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
    "in_session",
    "trans_log",
    "word_logp",
    "bigram_logp",
    "coverage",
    "extra_words",
    "overlap_prev",
    "overlap_session",
    "changes_partial",
    "src_personal",
    "own_log_count",
    "own_recency",
    "edit_dist",
    "src_fix",
    "src_typo_tree",
    "prefix_unknown",
    "prefix_own",
    "src_personal_word",
)
_F = {name: i for i, name in enumerate(FEATURES)}
N_BASE = len(FEATURES)
# What makes an exact candidate good enough that no corrected one ranks above it: logged by
# several people, or asked before by the user (in the session or ever).
TRUSTED = [_F[name] for name in ("is_label", "src_personal", "in_session")]
# Prefix-length buckets: the scorer has one weight vector per bucket, so it can trust the
# typed prefix more when it is long and popularity more when it is short.
BUCKET_EDGES = (3, 6, 10)
N_BUCKETS = len(BUCKET_EDGES) + 1


# (prefix, prev, label range, or an (r, 2) array of ranges) -> (label ids, scores), best first.
TreeSearch = Callable[[str, str, "tuple[int, int] | np.ndarray"], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates each source offers."""

    mpc_k: int = 20
    tree_k: int = 20
    word_k: int = 10
    cont_k: int = 3
    trans_k: int = 10
    session_max: int = 5  # the session's newest queries ranking reads
    session_chars: int = 256  # and of those, the newest that fit in this many characters
    personal_k: int = 10
    personal_words: int = 20  # the user's latest queries whose words finish the prefix
    personal_word_k: int = 20  # and at most this many such candidates (BENCHMARKS.md#personal-word-cap)
    sources: tuple[str, ...] = SOURCES
    typo_fixes: int = 2  # corrected prefixes generated from, at most
    typo_support: float = 50.0  # a partial or word under this weight may be a typo
    typo_tree_chars: int = 3  # the fuzzy beam searches labels under these first characters
    typo_tree_k: int = 10  # and offers its best this many
    typo_tree_few: int = 10  # ... and their one-edit variants when fewer labels have them
    typo_tree_max_chars: int | None = 16  # and runs only on prefixes up to this long (BENCHMARKS.md#fuzzy-beam-bound)
    typo_trusted: int = 3  # no correction when the exact prefix has this many trusted candidates
    # The budget of one keystroke's corrections (docs/METHOD.md, "Typo tolerance"): only the last
    # this many unknown whole words may be corrected (earlier ones are taken as typed), no word
    # longer than typo_max_word, and nothing in a prefix longer than typo_max_prefix, so a crafted
    # prefix cannot multiply the look-ups.
    typo_last_words: int = 1
    typo_max_word: int = 20
    typo_max_prefix: int = 64
    typo_lookups: int = 4  # and at most this many one-edit look-ups in the vocabulary (word, pair, span, partial)
    typo_rows: int = 40  # the corrected prefixes offer this many candidates at most, their sources' first
    max_rows: int = 80  # and no more than the exact ones left of this many: a keystroke's candidates at most
    session_k: int = 40  # session candidates at most (the newest queries' first)
    session_words: int = 20  # the session's newest distinct words that may correct a typed one


@dataclass
class Candidates:
    """The candidates of one keystroke, their feature rows and the keystroke's length bucket."""

    texts: list[str]
    features: np.ndarray  # (len(texts), N_BASE)
    bucket: int
    corrected: np.ndarray | None = None  # (len(texts),) bool: does not start with the prefix


class Context:
    """What a keystroke's candidates and features read of its session and its user, worked
    out once: its corrected prefixes are featurized under the same."""

    __slots__ = ("session", "personal", "prev", "prev_words", "session_words")

    def __init__(self, session: list[str], personal: PersonalHistory | None):
        """``session``: the queries ranking reads (:func:`_newest`), newest last."""
        self.session = session
        self.personal = personal
        self.prev = session[-1] if session else ""
        self.prev_words = set(self.prev.split())
        self.session_words = {w for h in session for w in h.split()}

    def vocabulary(self) -> Vocabulary:
        """Every word the user asked before (none without personal history)."""
        return self.personal.vocabulary() if self.personal else _NO_WORDS


_NO_WORDS = Vocabulary()


@dataclass
class Keystroke:
    """A keystroke's exact candidates and what its corrections start from
    (:meth:`CandidateGenerator.exact`)."""

    candidates: Candidates
    prefix: str
    context: Context
    on: set[str]
    trusted: int = 0  # exact candidates that are trusted (see TRUSTED)
    weak: list[int] = field(default_factory=list)  # the whole words that may hold a typo
    weak_partial: bool = False  # and whether the partial last word may

    @property
    def may_hold_typo(self) -> bool:
        """Whether :meth:`CandidateGenerator.corrected` would look for corrections."""
        return bool(self.weak) or self.weak_partial


class _Rows:
    """Candidate texts in the order their sources first offer them, and the feature cells
    the sources set: one table built at once, not a row array per candidate. A text longer
    than a query can be (:data:`MAX_QUERY_CHARS`) is no candidate: a long crafted prefix and
    session cannot make each keystroke featurize hundreds of characters per candidate."""

    __slots__ = ("at", "rows", "cols", "vals")

    def __init__(self) -> None:
        self.at: dict[str, int] = {}  # text -> its row
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []

    def __len__(self) -> int:
        return len(self.at)

    def set(self, text: str, col: int, value: float) -> None:
        """Feature ``col`` of ``text`` (a new row if it is new) is ``value``."""
        if len(text) > MAX_QUERY_CHARS:
            return
        at = self.at
        row = at.get(text)
        if row is None:
            row = at[text] = len(at)
        self.rows.append(row)
        self.cols.append(col)
        self.vals.append(value)

    def mark(self, texts: Iterable[str], col: int) -> None:
        """Feature ``col`` (a source's flag) of each of ``texts`` is 1."""
        at = self.at
        setdefault = at.setdefault
        rows = [setdefault(t, len(at)) for t in texts if len(t) <= MAX_QUERY_CHARS]
        self.rows += rows
        self.cols += [col] * len(rows)
        self.vals += [1.0] * len(rows)

    def table(self) -> tuple[list[str], np.ndarray]:
        """The texts and their (len, N_BASE) feature rows, zero where no source set one."""
        base = np.zeros((len(self.at), N_BASE))
        base[self.rows, self.cols] = self.vals
        return list(self.at), base


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
        self.corrector = WordCorrector(words.words, words.bigrams)
        self._start_ranges = lru_cache(4096)(self._label_ranges)
        # A corrected prefix offers fewer candidates than the typed one: it is one of several.
        c = self.config
        self._fix_config = dataclasses.replace(c, mpc_k=c.mpc_k // 2, word_k=c.word_k // 2, cont_k=min(1, c.cont_k),
                                               trans_k=c.trans_k // 2, personal_k=c.personal_k // 2,
                                               session_k=c.session_k // 2,
                                               personal_word_k=c.personal_word_k // 2)

    def _label_ranges(self, start: str) -> np.ndarray:
        """The label ranges of ``start`` and, if it has few labels, of its one-edit variants:
        where the fuzzy beam searches."""
        labels = self.labels
        ranges = [labels.range(start)]
        if ranges[0][1] - ranges[0][0] < self.config.typo_tree_few:
            ranges += [labels.range(v) for v in one_edit_variants(labels, start)]
        out = np.array(ranges, dtype=np.int64)
        out.flags.writeable = False
        return out

    def generate(
        self, prefix: str, session: Sequence[str] = (), personal: PersonalHistory | None = None
    ) -> Candidates:
        """All candidates for normalized ``prefix`` after ``session`` (newest last, normalized
        here as far as ranking reads it), with the user's own past queries from ``personal``;
        when the prefix looks misspelled, also the candidates of what it probably meant
        (``corrected``)."""
        return self.corrected(self.exact(prefix, session, personal))

    def exact(
        self, prefix: str, session: Sequence[str] = (), personal: PersonalHistory | None = None
    ) -> Keystroke:
        """The candidates that start with normalized ``prefix`` (as :meth:`generate`), and
        whether the prefix looks misspelled enough for :meth:`corrected` to add any."""
        cfg = self.config
        on = set(cfg.sources)
        if "personal" not in on:
            personal = None
        context = Context(_newest(session, cfg.session_max, cfg.session_chars), personal)
        texts, base = self._gather(prefix, context, on).table()
        self._table(texts, base, prefix, context)
        keystroke = Keystroke(Candidates(texts, base, bucket_of(len(prefix))), prefix, context, on)
        if not CORRECTED_MIN_CHARS <= len(prefix) <= cfg.typo_max_prefix or not (on & {"typo_words", "typo_tree"}):
            return keystroke
        # Corrections only where the exact prefix finds few candidates that people logged or
        # the user asked before.
        keystroke.trusted = int(base[:, TRUSTED].any(axis=1).sum()) if len(texts) else 0
        if keystroke.trusted >= cfg.typo_trusted:
            return keystroke
        # Only a word out of the vocabulary or a partial word that few words start with may
        # hold a typo: known words are taken as meant.
        head, _, partial = split_prefix(prefix)
        words = self.words.words
        toks = head.split()
        weak = [j for j, (w, n) in enumerate(zip(toks, words.count_list(toks)))
                if not n and len(w) <= cfg.typo_max_word]
        keystroke.weak = weak[-cfg.typo_last_words :] if cfg.typo_last_words > 0 else []
        keystroke.weak_partial = (bool(partial) and len(partial) <= cfg.typo_max_word
                                  and words.total(partial) < cfg.typo_support)
        return keystroke

    def corrected(self, keystroke: Keystroke) -> Candidates:
        """The exact candidates of ``keystroke`` and, if it may hold a typo, the candidates of
        what it probably meant after them (marked ``corrected``)."""
        exact = keystroke.candidates
        if not keystroke.may_hold_typo:
            return exact
        extra_texts, extra = self._corrections(keystroke)
        if not extra_texts:
            return exact
        corrected = np.zeros(len(exact.texts) + len(extra_texts), dtype=bool)
        corrected[len(exact.texts) :] = True
        return Candidates(exact.texts + extra_texts, np.vstack((exact.features, extra)), exact.bucket, corrected)

    def _gather(self, prefix: str, context: Context, on: set[str], cfg: CandidateConfig | None = None) -> _Rows:
        """The candidates of every source in ``on`` that start with ``prefix`` (as many as
        ``cfg`` says, default the generator's), with the feature cells their sources set."""
        cfg = cfg or self.config
        prev, session, personal = context.prev, context.session, context.personal
        head, prev_word, partial = split_prefix(prefix)
        rows = _Rows()
        add = rows.set
        labels = self.labels
        keys = labels.keys
        lo, hi = labels.range(prefix)
        if "mpc" in on:
            for rank, i in enumerate(labels.top_range(lo, hi, cfg.mpc_k)):
                add(keys[i], _F["mpc_rr"], 1.0 / (rank + 1))
        if "tree" in on and self.tree is not None and hi > lo:
            ids, scores = self.tree(prefix, prev, (lo, hi))
            for rank, (i, s) in enumerate(zip(ids[: cfg.tree_k].tolist(), scores.tolist())):
                add(keys[i], _F["tree_score"], s)
                add(keys[i], _F["tree_rr"], 1.0 / (rank + 1))
        if "prefix" in on and partial:
            add(prefix, _F["src_prefix"], 1.0)
        if "word" in on:
            completed = self.words.complete_word(prev_word, partial, cfg.word_k)
            for rank, w in enumerate(completed):
                add(head + w, _F["src_word"], 1.0)
                if rank < cfg.cont_k:
                    rows.mark([head + w + " " + f for f in self.words.followers(w, cfg.cont_k)], _F["src_cont"])
        if "transitions" in on and prev:
            rows.mark([q for q, _ in self.words.next_queries(prev, prefix, cfg.trans_k)], _F["src_trans"])
        if "session" in on:
            queries = (_query_words(h) for h in reversed(session))  # split only as far as k needs
            rows.mark(_session_candidates(queries, prefix, head, partial, cfg.session_k), _F["src_session"])
        if personal:
            rows.mark(personal.starting_with(prefix, cfg.personal_k), _F["src_personal"])
            # The user's words: the prefix finished as in their latest queries.
            rows.mark(_session_candidates(personal.recent_words(cfg.personal_words), prefix, head, partial,
                                          cfg.personal_word_k), _F["src_personal_word"])
        return rows

    def _table(
        self,
        texts: list[str],
        base: np.ndarray,
        prefix: str,
        context: Context,
        under_prefix: bool = True,
    ) -> None:
        """Fill in the feature rows ``base`` of ``texts`` (their sources' features set),
        relative to ``prefix``; ``under_prefix``: every text starts with it (as the gathered
        ones do)."""
        head, prev_word, partial = split_prefix(prefix)
        lo, hi = self.labels.range(prefix)
        # None when no label starts with the prefix (nor so any of the texts).
        found = None if hi == lo and under_prefix else self.labels.indices(texts)
        self._generic_features(base, texts, found, prefix, head, prev_word, partial, context, under_prefix)
        # Words of the prefix the vocabulary lacks (and a partial word it has no word for):
        # what tells a typed prefix with a typo from its correction. The vocabulary holds what
        # at least K people typed: a word fewer typed is unknown like one nobody typed, unless
        # this user typed it before (in the session or ever), which makes a typo less likely.
        words = self.words.words
        head_words = head.split()  # counted through the memory: the corrections ask for them too
        unknown = [w for w, n in zip(head_words, words.count_list(head_words)) if not n]
        weak_partial = bool(partial) and not words.total(partial)
        if unknown or weak_partial:  # else both columns stay 0
            said = context.session_words
            vocabulary = context.vocabulary()
            own = sum(w in said or w in vocabulary for w in unknown)
            own += weak_partial and (vocabulary.starts(partial) or any(w.startswith(partial) for w in said))
            base[:, _F["prefix_unknown"]] = len(unknown) + weak_partial - own
            base[:, _F["prefix_own"]] = own
        if context.personal and texts:
            base[:, _F["own_log_count"] : _F["own_recency"] + 1] = context.personal.features_of(texts)

    def _corrections(self, keystroke: Keystroke) -> tuple[list[str], np.ndarray]:
        """Candidates of what the misspelled prefix of ``keystroke`` probably meant, none of
        its exact ones: those of the prefix with one word or the partial last word corrected
        (``typo_words``), and labels near the typed text under its first characters
        (``typo_tree``), each within :func:`max_edits` of the prefix (docs/METHOD.md, "Typo
        tolerance")."""
        cfg = self.config
        prefix, context, on = keystroke.prefix, keystroke.context, keystroke.on
        weak, weak_partial, trusted = keystroke.weak, keystroke.weak_partial, keystroke.trusted
        have = set(keystroke.candidates.texts)
        limit = max_edits(len(prefix))
        head, _, partial = split_prefix(prefix)
        words = self.words.words
        toks = head.split()
        rows_left = min(cfg.typo_rows, cfg.max_rows - len(have))
        if rows_left <= 0:  # the exact candidates took the keystroke's rows
            return [], np.zeros((0, N_BASE))
        fixes = self._fixes(prefix, context.session, on, toks, weak, weak_partial) if "typo_words" in on else []
        out: list[str] = []
        tables: list[np.ndarray] = []
        for fix in fixes:
            if rows_left <= 0:
                break
            # A corrected prefix is a query of its own only if it ends with a whole word.
            whole = fix.endswith(" ") or words.count(fix[fix.rfind(" ") + 1 :]) > 0
            sources = on - ({"tree"} if whole else {"tree", "prefix"})
            texts, base = self._gather(fix, context, sources, self._fix_config).table()
            keep = [j for j, t in enumerate(texts) if not (t in have or t.startswith(prefix))][:rows_left]
            if len(keep) < len(texts):
                texts, base = [texts[j] for j in keep], base[keep]
            if not texts:
                continue
            self._table(texts, base, fix, context)
            base[:, _F["src_fix"]] = 1.0
            base[:, _F["edit_dist"]] = 1.0
            out += texts
            tables.append(base)
            have = have | set(texts)
            rows_left -= len(texts)
        # The tree reaches beyond the words' corrections: a label near the typed text, when no
        # corrected prefix was found (or the word sources are off), nothing exact is trusted
        # and some typed word is unknown.
        if ("typo_tree" in on and self.tree is not None and not out and not trusted
                and (cfg.typo_tree_max_chars is None or len(prefix) <= cfg.typo_tree_max_chars)
                and (weak or (partial and not words.total(partial)))):
            out, base = self._fuzzy_tree(prefix, context, have, limit, rows_left)
            tables.append(base)
        if not out:
            return [], np.zeros((0, N_BASE))
        return out, tables[0] if len(tables) == 1 else np.vstack(tables)

    def _fixes(
        self, prefix: str, session: Sequence[str], on: set[str], toks: list[str], weak: list[int],
        weak_partial: bool,
    ) -> list[str]:
        """Up to ``typo_fixes`` corrected prefixes, most trusted kinds first (docs/METHOD.md,
        "Typo tolerance"); the look-ups stop once there are enough, or after ``typo_lookups``
        one-edit look-ups in the vocabulary, found or not."""
        cfg = self.config
        corrector = self.corrector
        head, _, partial = split_prefix(prefix)
        fixes: dict[str, None] = {}
        lookups = cfg.typo_lookups

        def full() -> bool:
            return len(fixes) >= cfg.typo_fixes

        def may_look() -> bool:  # one more one-edit look-up, if the budget has one
            nonlocal lookups
            lookups -= 1
            return lookups >= 0 and not full()

        def add(fix: str) -> None:
            if not full() and not fix.startswith(prefix):  # extending the prefix corrects nothing
                fixes[fix] = None

        # The session's own words first: a user retyping a query misspells it anew.
        mine = list(dict.fromkeys(w for h in reversed(session) for w in h.split()))[: cfg.session_words]
        # The first character of the prefix is taken as typed; of a later word, not.
        for j in weak:
            first = j == 0
            for fix in session_fixes(toks[j], mine, True, first)[:1]:
                add(" ".join(toks[:j] + [fix] + toks[j + 1 :]) + " " + partial)
            # With a neighbour, as a word pair people typed: a space dropped, added or
            # moved is one edit too ("headi sland" is "head island").
            for a in (j - 1, j):
                if a >= 0 and a + 1 < len(toks) and may_look():
                    for v in corrector.pairs(toks[a] + " " + toks[a + 1], a == 0, j - a):
                        add(" ".join(toks[:a] + [v] + toks[a + 2 :]) + " " + partial)
            if full():
                return list(fixes)
            for v in corrector.splits(toks[j], whole=True)[:1]:
                add(" ".join(toks[:j] + [v] + toks[j + 1 :]) + " " + partial)
            word = corrector.correct(toks[j], first) if may_look() else None
            if word is not None:
                add(" ".join(toks[:j] + [word] + toks[j + 1 :]) + " " + partial)
        if weak_partial:
            for v in session_fixes(partial, mine, False, not head)[:1]:
                add(head + v)
        # The last two words as a bigram: also a space dropped, added or moved.
        if (weak_partial or (weak and weak[-1] == len(toks) - 1)) and may_look():
            trimmed = prefix.rstrip(" ")
            span = " ".join(trimmed.split(" ")[-2:])
            cut = len(trimmed) - len(span)
            for v in corrector.spans(span):
                add(prefix[:cut] + v + prefix[len(trimmed) :])
        if weak_partial and not full():
            if may_look():
                for v in corrector.partials(partial, cfg.typo_fixes, not head):
                    add(head + v)
            if not full():
                for v in corrector.splits(partial):
                    add(head + v)
        elif not partial and weak and weak[-1] == len(toks) - 1 and not full():
            for v in corrector.splits(toks[-1]):
                add(head[: len(head) - len(toks[-1]) - 1] + v + " ")
        return list(fixes)

    def _fuzzy_tree(
        self, prefix: str, context: Context, have: set[str], limit: int, most: int
    ) -> tuple[list[str], np.ndarray]:
        """Labels within ``limit`` edits of the prefix under its first characters (and their
        one-edit variants, when few labels start with those), ranked by the tree's beam on the
        typed text, none of ``have``, at most ``most``; with their feature rows."""
        cfg = self.config
        labels = self.labels
        assert self.tree is not None
        ids, scores = self.tree(prefix, context.prev, self._start_ranges(prefix[: cfg.typo_tree_chars]))
        ids, scores = ids[: cfg.typo_tree_k], scores[: cfg.typo_tree_k]
        rows = _Rows()
        rank = 0
        for i, s in zip(ids.tolist(), scores.tolist()):
            text = labels.keys[i]
            d = prefix_distance(prefix, text, limit)
            if d == 0 or d > limit or text in have:
                continue
            if rank == most:
                break
            rank += 1
            rows.set(text, _F["edit_dist"], d)
            rows.set(text, _F["tree_score"], s)
            rows.set(text, _F["tree_rr"], 1.0 / rank)
            rows.set(text, _F["src_typo_tree"], 1.0)
        texts, base = rows.table()
        if texts:
            self._table(texts, base, prefix, context, under_prefix=False)
        return texts, base

    def _generic_features(
        self,
        base: np.ndarray,
        texts: list[str],
        label_ids: np.ndarray | None,
        prefix: str,
        head: str,
        prev_word: str,
        partial: str,
        context: Context,
        under_prefix: bool,
    ) -> None:
        if not texts:
            return
        words = self.words
        prev, prev_words, session_words = context.prev, context.prev_words, context.session_words
        cut = len(head)
        base[:, _F["bias"]] = 1.0
        if label_ids is not None:  # else no text is a label: their columns stay 0
            counts = np.where(label_ids >= 0, self.labels.weights[label_ids], 0.0)
            base[:, _F["log_count"]] = np.log1p(counts)
            base[:, _F["is_label"]] = counts > 0
        base[:, _F["coverage"]] = len(prefix) / np.array([len(t) for t in texts])
        if under_prefix:
            # Each text is the head and its own words: only those are split, and the head's
            # words counted once.
            head_toks = head[:-1].split(" ") if head else []
            toks = [t[cut:].split(" ") for t in texts]
            completed = [t[0] for t in toks]
        else:
            head_toks = []
            toks = [t.split(" ") for t in texts]
            completed = [t[cut:].split(" ", 1)[0] for t in texts]
        base[:, _F["word_logp"]] = words.word_logps(completed, partial)
        base[:, _F["bigram_logp"]] = words.bigram_logps(prev_word, completed, partial)
        if prev:  # transition_counts answers zeros at once when nothing followed prev
            base[:, _F["trans_log"]] = np.log1p(words.transition_counts(prev, texts))
        n_toks = np.array([len(t) for t in toks], dtype=np.float64) + len(head_toks)
        for h in set(context.session):  # a few queries, each found among the texts (unique) by one scan
            if h in texts:
                base[texts.index(h), _F["in_session"]] = 1.0
        base[:, _F["extra_words"]] = n_toks - (head.count(" ") + 1)
        if prev_words:
            base[:, _F["overlap_prev"]] = _overlaps(prev_words, head_toks, toks) / n_toks
        if session_words == prev_words:  # the session is the previous query
            base[:, _F["overlap_session"]] = base[:, _F["overlap_prev"]]
        elif session_words:
            base[:, _F["overlap_session"]] = _overlaps(session_words, head_toks, toks) / n_toks
        base[:, _F["changes_partial"]] = [c != partial for c in completed]


def _newest(session: Sequence[str], most: int, chars: int) -> list[str]:
    """The newest of ``session`` (oldest first), normalized and non-empty, at most ``most`` of
    them and as many as fit in ``chars`` characters (the newest always): what a crafted session
    of long queries costs a keystroke stays that of an ordinary one (the older ones are not
    even normalized)."""
    out: list[str] = []
    for h in map(normalize, reversed(session)):
        if h:
            chars -= len(h)
            if out and (chars < 0 or len(out) == most):
                break
            out.append(h)
    out.reverse()
    return out


# A session's queries come back on each of its keystrokes: split once each.
_query_words = lru_cache(1 << 14)(query_words)


def _overlaps(words: set[str], head: list[str], toks: list[list[str]]) -> np.ndarray:
    """How many of ``words`` each text holds, a text being the words ``head`` then its own
    ``toks``."""
    known = words.intersection(head)
    rest = words - known
    return len(known) + np.array([len(rest.intersection(t)) for t in toks])


def _session_candidates(
    queries: Iterable[QueryWords], prefix: str, head: str, partial: str, k: int | None = None
) -> list[str]:
    """Earlier queries (split by :func:`~indexer.personal.query_words`, newest first) that
    start with the prefix, and the prefix finished with their words.

    For ``"salem r"`` after ``"oregon running calendar"``: ``"salem running"`` and
    ``"salem running calendar"`` (a reformulation keeps the tail of the last query).
    At most ``k`` distinct ones, if given (the newest queries' first).
    """
    out: dict[str, None] = {}
    for h, words in queries:
        if h.startswith(prefix):
            out[h] = None
        for w, tail in words:
            if w.startswith(partial):
                out[head + w] = None
                if tail:
                    out[head + tail] = None
        if k is not None and len(out) >= k:
            return list(out)[:k]
    return list(out)
