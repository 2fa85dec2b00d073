"""The learned reranker: a linear scorer per prefix-length bucket over candidate features."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..candidates import FEATURES, N_BASE, N_BUCKETS, Candidates
from ..personal import PersonalHistory
from .examples import Example


def collect_training_rows(
    examples: Sequence[Example],
    personal: Sequence[PersonalHistory | None],
    generate: Callable[[str, Sequence[str], PersonalHistory | None], Candidates],
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, 0/1 targets, group ids and buckets of the candidates of each example
    (with its user's history from ``personal``) whose target is among them (the others teach
    the scorer nothing about ordering)."""
    feats, targets, groups, buckets = [], [], [], []
    for g, (ex, mine) in enumerate(zip(examples, personal)):
        cands = generate(ex.prefix, ex.history, mine)
        if progress is not None:
            progress(1)
        if ex.target not in cands.texts:
            continue
        y = np.zeros(len(cands.texts), dtype=np.int8)
        y[cands.texts.index(ex.target)] = 1
        feats.append(cands.features.astype(np.float32))
        targets.append(y)
        groups.append(np.full(len(y), g, dtype=np.int32))
        buckets.append(np.full(len(y), cands.bucket, dtype=np.int8))
    if not feats:
        empty = np.zeros(0, dtype=np.int32)
        return np.zeros((0, N_BASE), dtype=np.float32), empty, empty, empty
    return np.vstack(feats), np.concatenate(targets), np.concatenate(groups), np.concatenate(buckets)


def fit_reranker(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, buckets: np.ndarray, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Weights ``(N_BUCKETS, N_BASE)`` of a pairwise logistic scorer: in each keystroke, the
    true candidate against each other one. A keystroke's candidates share its bucket, so each
    bucket is an independent problem. Score = ``features @ weights[bucket]``."""
    from sklearn.linear_model import LogisticRegression

    weights = default_weights()
    rng = np.random.default_rng(seed)
    pos_rows = np.flatnonzero(y == 1)
    if len(pos_rows) == 0:
        return weights
    pos_of_group = np.full(int(groups.max()) + 1, -1)
    pos_of_group[groups[pos_rows]] = pos_rows
    for b in range(N_BUCKETS):
        neg = np.flatnonzero((y == 0) & (buckets == b))
        if len(neg) < 10:
            continue
        diff = X[pos_of_group[groups[neg]]] - X[neg]
        # Flip half of the pairs so both classes are present without doubling the data;
        # no intercept: it would cancel in a difference anyway.
        flip = rng.random(len(diff)) < 0.5
        diff[flip] *= -1
        scale = np.abs(diff).max(axis=0)
        scale[scale == 0] = 1.0
        clf = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed)
        clf.fit(diff / scale, (~flip).astype(int))
        weights[b] = clf.coef_.ravel() / scale
    return weights


def default_weights() -> np.ndarray:
    """A hand-set scorer for when none can be trained: popularity first, then tree score; the
    user's own queries by how often and how lately they asked them."""
    w = np.zeros((N_BUCKETS, N_BASE))
    w[:, FEATURES.index("mpc_rr")] = 4.0
    w[:, FEATURES.index("tree_score")] = 1.0
    w[:, FEATURES.index("log_count")] = 0.5
    w[:, FEATURES.index("own_log_count")] = 1.0
    w[:, FEATURES.index("own_recency")] = 2.0
    return w
