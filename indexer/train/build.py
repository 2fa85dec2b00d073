"""The offline pipeline: logs → sessions → examples → features → tree → rankers → model dir."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ..blocklist import Blocklist
from ..model import Model, XRLinear
from ..normalize import normalize_prefix
from ..params import BuildParams
from ..personal import user_events
from ..storage import atomic_directory
from ..tfidf import PrefixFeaturizer
from ..topk import PrefixTopK
from ..typos import SYNTHETIC_TYPO_MIN_CHARS, add_typo
from ..wordmodel import counted_index
from .cluster import build_label_tree
from .counts import check_users, count_people
from .examples import Example, protocol_pairs, training_examples
from .executors import Executor, LocalExecutor
from .logs import LogRow, LogStats, read_logs
from .node_rankers import train_rankers
from .scorer import default_weights, fit_scorer
from .scorer_tasks import collect_in_tasks
from .sessions import sessions_of

# Examples featurized per task: about 50 MB of input vectors.
FEATURE_CHUNK_ROWS = 200_000


@dataclass
class BuildSummary:
    """What a build read, made and spent, for the closing report and the manifest."""

    rows_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    sessions: int = 0
    examples: int = 0
    distinct_queries: int = 0
    labels: int = 0
    blocklist_terms: int = 0
    tree_depth: int = 0
    tree_leaves: int = 0
    nonzero_weights: int = 0
    scorer_examples: int = 0
    scorer_recall: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    worker_peak_memory_mb: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Stages:
    """Times named stages and shows progress bars (or none when ``quiet``)."""

    def __init__(self, summary: BuildSummary, quiet: bool, prefix: str = ""):
        self.summary = summary
        self.quiet = quiet
        self.prefix = prefix

    def prefixed(self, prefix: str) -> _Stages:
        """The same timer and bars, with stage names starting with ``prefix``."""
        return _Stages(self.summary, self.quiet, self.prefix + prefix)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Iterator[Callable[[int], None]]:
        name = self.prefix + name
        start = time.perf_counter()
        bar = tqdm(total=total, desc=name, unit=unit, disable=self.quiet or None, leave=False, dynamic_ncols=True)
        try:
            yield bar.update
        finally:
            bar.close()
            seconds = self.summary.seconds
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def peak_memory_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished worker, in MB.

    Forked workers share most pages with this process, so the two must not be added up;
    ``scripts/peak_memory.sh`` measures the true total.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(own / 1024, 1), round(worker / 1024, 1)


@dataclass(frozen=True)
class TrainingRows:
    """The tree's training rows: identical (prev, prefix, target) examples merged into one
    row weighted by their count."""

    prefixes: list[str]
    prevs: list[str]
    y: np.ndarray  # label id of the target
    weight: np.ndarray
    prefix_len: np.ndarray


def training_rows(keys: Sequence[str], examples: Sequence[Example]) -> TrainingRows:
    """Merge ``examples`` into weighted rows; ``keys`` are the sorted labels (id = index)."""
    triples = Counter((e.prev, e.prefix, e.target) for e in examples)
    position = {k: i for i, k in enumerate(keys)}
    n = len(triples)
    return TrainingRows(
        prefixes=[t[1] for t in triples],
        prevs=[t[0] for t in triples],
        y=np.fromiter((position[t[2]] for t in triples), dtype=np.int64, count=n),
        weight=np.fromiter(triples.values(), dtype=np.float64, count=n),
        prefix_len=np.fromiter((len(t[1]) for t in triples), dtype=np.int64, count=n),
    )


def transform_chunk(featurizer: PrefixFeaturizer, chunk: tuple[list[str], list[str]]) -> sp.csr_matrix:
    """Input vectors of one chunk of (prefixes, previous queries): a featurizing task."""
    return featurizer.transform(*chunk)


def featurize(
    featurizer: PrefixFeaturizer,
    prefixes: Sequence[str],
    prevs: Sequence[str],
    executor: Executor,
    progress: Callable[[int], Any] | None = None,
    chunk_rows: int = FEATURE_CHUNK_ROWS,
) -> sp.csr_matrix:
    """``featurizer.transform(prefixes, prevs)``, in chunks of rows run on ``executor``.

    Every row is computed on its own, so the stacked chunks equal the one-batch transform.
    """
    chunks = (
        (list(prefixes[i : i + chunk_rows]), list(prevs[i : i + chunk_rows]))
        for i in range(0, len(prefixes), chunk_rows)
    )
    on_result = None if progress is None else (lambda _: progress(1))
    parts = executor.map(transform_chunk, chunks, featurizer, on_result)
    if not parts:
        return featurizer.transform([], [])
    return sp.vstack(parts, format="csr")


def fit_tree(
    labels: PrefixTopK,
    examples: Sequence[Example],
    params: BuildParams,
    stages: _Stages,
    summary: BuildSummary | None = None,
    executor: Executor | None = None,
) -> XRLinear:
    """Featurizer, label tree and node rankers (docs/METHOD.md: features, label tree, node
    rankers), the costly stages run as tasks on ``executor`` (default: ``params.workers``
    local processes)."""
    executor = executor or LocalExecutor(params.workers)
    keys = labels.keys
    with stages.stage("features"):
        featurizer = PrefixFeaturizer(weighting=params.weighting, prev_weight=params.prev_weight)
        featurizer.fit(keys, keys)
        embeddings = featurizer.embed(keys)
        rows = training_rows(keys, examples)
    with stages.stage("featurize", total=-(-len(rows.y) // FEATURE_CHUNK_ROWS), unit="chunk") as update:
        X = featurize(featurizer, rows.prefixes, rows.prevs, executor, update, FEATURE_CHUNK_ROWS)
        y, weight, prefix_len = rows.y, rows.weight, rows.prefix_len
        del rows  # the texts
    with stages.stage("tree"):
        tree = build_label_tree(
            keys, embeddings, params.trie_depth, params.max_leaf, params.branching, params.seed
        )
    with stages.stage("rankers", total=tree.n_nodes, unit="node") as update:
        weights = train_rankers(
            tree, X, y, C=params.svm_c, prune=params.prune, workers=params.workers, progress=update,
            sample_weight=weight, prefix_len=prefix_len, trie_depth=params.trie_depth, executor=executor,
        )
    if summary is not None:
        summary.examples = len(examples)
        summary.tree_depth = int(tree.max_depth)
        summary.tree_leaves = int(tree.n_leaves)
        summary.nonzero_weights = int(weights.nnz)
    return XRLinear(featurizer, tree, weights.tocsc(), params.beam)


def fit_model(
    rows: Sequence[LogRow],
    sessions: Sequence[Sequence[LogRow]],
    params: BuildParams,
    scorer_weights: np.ndarray,
    stages: _Stages,
    blocklist: Blocklist,
    summary: BuildSummary | None = None,
    executor: Executor | None = None,
) -> Model:
    """Every component fitted on these rows and sessions, ranked by ``scorer_weights``: only what
    ``params.min_users`` people typed and ``blocklist`` lets through can be suggested."""
    with stages.stage("counts"):
        counts = count_people(rows, sessions)
        kept = counts.kept(params.min_users, blocklist)
        labels = counted_index(kept.queries)
        words = kept.word_model()
    if summary is not None:
        summary.distinct_queries = len(counts.queries)
    del counts
    tree = None
    if params.use_tree:
        examples = [e for e in training_examples(sessions, params.prefixes_per_query, params.seed)
                    if e.target in kept.queries]
        tree = fit_tree(labels, examples, params, stages, summary, executor)
    return Model(params, labels, words, scorer_weights, tree, blocklist=blocklist)


def split_for_scorer(
    rows: Sequence[LogRow], params: BuildParams
) -> tuple[list[LogRow], list[LogRow]]:
    """Early rows (to fit counts and tree on) and late rows (to fit the scorer on).

    Timed logs split at ``scorer_days`` before their end; a plain query list splits at random.
    """
    times = [r.time for r in rows if r.time is not None]
    if len(times) == len(rows):
        cut = max(times) - params.scorer_days * 86400
        return [r for r in rows if r.time < cut], [r for r in rows if r.time >= cut]  # type: ignore[operator]
    late = np.random.default_rng(params.seed).random(len(rows)) < params.scorer_holdout
    return [r for r, x in zip(rows, late) if not x], [r for r, x in zip(rows, late) if x]


def scorer_examples(sessions: Sequence[Sequence[LogRow]], params: BuildParams) -> list[Example]:
    """Keystrokes to fit the scorer on: evaluation-style pairs, several prefixes each;
    for a log without sessions, each query with prefixes and no history."""
    if any(len(s) > 1 for s in sessions):
        examples = [ex for seed in range(params.scorer_prefixes) for ex in protocol_pairs(sessions, seed)]
    else:
        examples = training_examples(sessions, params.scorer_prefixes, params.seed)
    if len(examples) > params.scorer_max_examples:
        # A few dozen weights need no more; a big log would only make the build slower.
        keep = np.random.default_rng(params.seed).choice(len(examples), params.scorer_max_examples, replace=False)
        examples = [examples[i] for i in np.sort(keep)]
    return examples


def typo_examples(examples: Sequence[Example], share: float, seed: int = 0) -> list[Example]:
    """Copies of a ``share`` of the examples whose prefix has :data:`~indexer.typos.SYNTHETIC_TYPO_MIN_CHARS`+
    characters, each with one synthetic typo in its prefix (as ``qac eval --typos`` makes
    them), so that the scorer learns what a corrected candidate is worth."""
    rng = np.random.default_rng(seed + 13)
    out = []
    for ex in examples:
        if len(ex.prefix) >= SYNTHETIC_TYPO_MIN_CHARS and rng.random() < share:
            typed = normalize_prefix(add_typo(ex.prefix, rng))
            if typed and typed != ex.prefix:
                out.append(Example(ex.session, typed, ex.target, ex.user, ex.time))
    return out


def train_scorer(
    rows: Sequence[LogRow],
    params: BuildParams,
    stages: _Stages,
    summary: BuildSummary,
    blocklist: Blocklist,
    executor: Executor | None = None,
) -> np.ndarray:
    """Fit the components on the early rows, then the scorer on keystrokes of the late ones,
    each with its user's own earlier queries as personal history."""
    early, late = split_for_scorer(rows, params)
    if not params.fit_scorer or not early or not late:
        return default_weights()
    # Counts and tree of the early weeks only: the scorer must see their features as they
    # look on queries they were not fitted on.
    early_model = fit_model(
        early, sessions_of(early), params, default_weights(), stages.prefixed("early "), blocklist,
        executor=executor,
    )
    clean = scorer_examples(sessions_of(late), params)
    examples = clean + typo_examples(clean, params.typo_share, params.seed)
    events = user_events((r.user, r.time, r.query) for r in rows) if "personal" in params.sources else None
    with stages.stage("scorer", total=len(examples), unit="keystroke") as update:
        X, y, groups, buckets = collect_in_tasks(examples, early_model, events,
                                                 executor or LocalExecutor(params.workers), update)
        summary.scorer_examples = len(examples)
        summary.scorer_recall = round(float(y.sum()) / max(1, len(examples)), 4)
        if y.sum() == 0:
            return default_weights()
        return fit_scorer(X, y, groups, buckets, C=params.scorer_c, seed=params.seed, typo_from=len(clean))


def build(
    logs: Sequence[str | Path],
    out: str | Path,
    params: BuildParams,
    quiet: bool = False,
    executor: Executor | None = None,
    blocklist: Blocklist | None = None,
    columns: Mapping[str, int | str] | None = None,
) -> BuildSummary:
    """Build a model from ``logs`` into directory ``out``, atomically.

    Nothing that ``blocklist`` blocks is suggested (default: the shipped lists when
    ``params.default_blocklist``, else none); the model keeps the list and applies it when serving,
    with its sensitive terms (which the build keeps: they are shown when typed whole).

    The costly stages run as tasks on ``executor`` (default: ``params.workers`` local
    processes; see :func:`~indexer.train.executors.open_executor` for a Dask cluster); the model
    is the same wherever they ran.

    Raises :class:`~indexer.train.logs.LogError` for unusable input,
    :class:`~indexer.train.counts.PrivacyError` for a log without users and
    ``params.min_users > 1``, and :class:`~indexer.storage.ModelError` when ``out`` cannot be
    written; ``out`` is then left as it was. ``columns`` is where the logs' fields are
    (:func:`~indexer.train.logs.read_logs`).
    """
    if blocklist is None:
        blocklist = Blocklist.default() if params.default_blocklist else Blocklist()
    summary = BuildSummary(blocklist_terms=len(blocklist))
    stages = _Stages(summary, quiet)
    started = time.time()
    out = Path(out)
    with atomic_directory(out) as tmp:
        stats = LogStats()
        with stages.stage("read", unit="row") as update:
            rows, stats = read_logs([Path(p) for p in logs], stats, progress=update, columns=columns)
        summary.rows_read = stats.rows_read
        summary.skipped = dict(stats.skipped)
        check_users(rows, params.min_users)
        with stages.stage("sessions"):
            sessions = sessions_of(rows)
        summary.sessions = len(sessions)
        executor = executor or LocalExecutor(params.workers)
        scorer_weights = train_scorer(rows, params, stages, summary, blocklist, executor)
        model = fit_model(rows, sessions, params, scorer_weights, stages, blocklist, summary, executor)
        summary.labels = len(model.labels)
        with stages.stage("save"):
            built = datetime.now(UTC).isoformat(timespec="seconds")
            digest = hashlib.sha256(
                json.dumps([sorted(stats.checksums.items()), params.to_json(), built]).encode()
            ).hexdigest()[:12]
            summary.peak_memory_mb, summary.worker_peak_memory_mb = peak_memory_mb()
            manifest = {
                "version": digest,
                "built_at": built,
                "build_seconds": round(time.time() - started, 2),
                "inputs": stats.checksums,
                "counts": summary.to_json(),
            }
            model.save(tmp, manifest)
    summary.peak_memory_mb, summary.worker_peak_memory_mb = peak_memory_mb()
    return summary
