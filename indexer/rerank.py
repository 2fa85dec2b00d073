"""The learned reranker: one linear scorer over the candidate features of a keystroke."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .candidates import N_FEATURES, Candidates
from .examples import Example


def collect_training_rows(
    examples: Sequence[Example],
    generate: Callable[[str, Sequence[str]], Candidates],
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate feature rows, 0/1 targets and group ids, for the examples whose target is
    among the candidates (the others teach the scorer nothing about ordering)."""
    feats, targets, groups = [], [], []
    for g, ex in enumerate(examples):
        cands = generate(ex.prefix, ex.history)
        if progress is not None:
            progress(1)
        if ex.target not in cands.texts:
            continue
        y = np.zeros(len(cands.texts))
        y[cands.texts.index(ex.target)] = 1.0
        feats.append(cands.features)
        targets.append(y)
        groups.append(np.full(len(y), g))
    if not feats:
        return np.zeros((0, N_FEATURES)), np.zeros(0), np.zeros(0, dtype=int)
    return np.vstack(feats), np.concatenate(targets), np.concatenate(groups)


def fit_reranker(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Weights of a pairwise logistic scorer: the true candidate against each other one of
    its keystroke. Returns a vector ``w`` with ``score = features @ w``."""
    from sklearn.linear_model import LogisticRegression

    if len(y) == 0 or y.sum() == 0:
        return default_weights()
    pos_rows = np.flatnonzero(y == 1)
    pos_of_group = np.full(groups.max() + 1, -1)
    pos_of_group[groups[pos_rows]] = pos_rows
    neg = np.flatnonzero(y == 0)
    diff = X[pos_of_group[groups[neg]]] - X[neg]
    scale = np.abs(diff).max(axis=0)
    scale[scale == 0] = 1.0
    diff = diff / scale
    # Symmetric pairs make the problem balanced; no intercept (it cancels in differences).
    data = np.vstack([diff, -diff])
    labels = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    clf = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed)
    clf.fit(data, labels)
    return clf.coef_.ravel() / scale


def default_weights() -> np.ndarray:
    """A hand-set scorer for a model too small to train one: popularity, then tree score."""
    from .candidates import _F, N_BASE, N_BUCKETS

    w = np.zeros(N_FEATURES)
    for b in range(N_BUCKETS):
        w[b * N_BASE + _F["mpc_rr"]] = 4.0
        w[b * N_BASE + _F["tree_score"]] = 1.0
        w[b * N_BASE + _F["log_count"]] = 0.5
    return w
