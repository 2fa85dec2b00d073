"""Fitting the scorer: a linear weight vector per prefix-length bucket over the ranking features."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..candidates import FEATURES, N_BASE, N_BUCKETS, Candidates
from ..personal import PersonalHistory
from .examples import Example

# The features only typos give values (docs/METHOD.md, "Typo tolerance"): fitted after the
# others, which are fitted as before them.
TYPO_FEATURES = {FEATURES.index(name) for name in ("edit_dist", "src_fix", "src_typo_tree", "prefix_unknown",
                                                      "prefix_own")}
EDIT_DIST = FEATURES.index("edit_dist")


def collect_training_rows(
    examples: Sequence[Example],
    personal: Iterable[PersonalHistory | None],
    generate: Callable[[str, Sequence[str], PersonalHistory | None], Candidates],
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, 0/1 targets, group ids and buckets of the candidates of each example
    (with its user's history from ``personal``) whose target is among them (the others teach
    the scorer nothing about ordering)."""
    feats, targets, groups, buckets = [], [], [], []
    for g, (ex, mine) in enumerate(zip(examples, personal)):
        cands = generate(ex.prefix, ex.session, mine)
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


def fit_scorer(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, buckets: np.ndarray, C: float = 1.0, seed: int = 0,
    typo_from: int | None = None,
) -> np.ndarray:
    """Weights ``(N_BUCKETS, N_BASE)`` of a pairwise logistic scorer: in each keystroke, the
    true candidate against each other one. A keystroke's candidates share its bucket, so each
    bucket is an independent problem. Score = ``features @ weights[bucket]``.

    In two steps, so that typos cannot move how exact candidates rank: every feature but the
    typo features (:data:`TYPO_FEATURES`) is fitted on the keystrokes as typed (groups below
    ``typo_from``; all of them if None); then, those weights held, the typo features on every
    keystroke, those with a synthetic typo included.
    """
    from sklearn.linear_model import LogisticRegression

    weights = default_weights()
    rng = np.random.default_rng(seed)
    rng_typo = np.random.default_rng(seed + 1)
    pos_rows = np.flatnonzero(y == 1)
    if len(pos_rows) == 0:
        return weights
    pos_of_group = np.full(int(groups.max()) + 1, -1)
    pos_of_group[groups[pos_rows]] = pos_rows
    base = np.array([i for i in range(N_BASE) if i not in TYPO_FEATURES])
    typo = np.array(sorted(TYPO_FEATURES))
    clean_group = groups < (typo_from if typo_from is not None else int(groups.max()) + 1)
    for b in range(N_BUCKETS):
        neg = np.flatnonzero((y == 0) & (buckets == b))
        if not len(neg):
            continue
        diff = X[pos_of_group[groups[neg]]] - X[neg]
        # As typed, and without the corrected candidates: the very problem (pairs, flips,
        # scales and draws of the random generator) of a build before typos, so its weights.
        mine = clean_group[neg] & (X[neg, EDIT_DIST] == 0) & (X[pos_of_group[groups[neg]], EDIT_DIST] == 0)
        # Flip half of the pairs so both classes are present without doubling the data;
        # no intercept: it would cancel in a difference anyway.
        flip = np.zeros(len(neg), dtype=bool)
        if mine.sum() >= 10:
            flip[mine] = rng.random(int(mine.sum())) < 0.5
        flip[~mine] = rng_typo.random(int((~mine).sum())) < 0.5
        diff[flip] *= -1
        if mine.sum() >= 10:
            d = diff[mine]
            scale = np.abs(d).max(axis=0)
            scale[scale == 0] = 1.0
            clf = LogisticRegression(C=C, fit_intercept=False, max_iter=2000, random_state=seed)
            clf.fit(d[:, base] / scale[base], (~flip[mine]).astype(int))
            weights[b] = 0.0
            weights[b, base] = clf.coef_.ravel() / scale[base]
        if len(neg) >= 10 and np.abs(diff[:, typo]).max() > 0:
            scale = np.abs(diff[:, typo]).max(axis=0)
            scale[scale == 0] = 1.0
            offset = diff[:, base] @ weights[b, base]
            sign = np.where(flip, -1.0, 1.0)
            weights[b, typo] = _fit_with_offset(diff[:, typo] / scale, sign, offset, C) / scale
    return weights


def _fit_with_offset(Z: np.ndarray, sign: np.ndarray, offset: np.ndarray, C: float) -> np.ndarray:
    """Logistic regression without intercept of labels ``sign`` (+1/-1) on ``Z`` with a fixed
    ``offset`` added to every margin, L2-penalized as scikit-learn's (``C``): its weights."""
    from scipy.optimize import minimize

    Z = Z.astype(np.float64)

    def loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        m = sign * (offset + Z @ v)
        value = np.logaddexp(0.0, -m).sum() + 0.5 / C * v @ v
        grad = -(Z * (sign * _sigmoid(-m))[:, None]).sum(axis=0) + v / C
        return float(value), grad

    return minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B").x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


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
