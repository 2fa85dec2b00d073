"""The learned scorer: one linear weight vector per prefix-length bucket over the ranking
features of :mod:`indexer.candidates`, and the rules of what a keystroke may show."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

import numpy as np

from .candidates import N_BASE, N_BUCKETS, TRUSTED, Candidates


@dataclass(frozen=True)
class Completion:
    """One suggestion: a normalized query and its score (higher is better); ``personal`` when
    it is one of the user's own past queries (shown to that user only); ``corrected`` when it
    does not start with the normalized typed prefix (a typo was corrected)."""

    query: str
    score: float
    personal: bool = False
    corrected: bool = False


class Scorer:
    """Scores a keystroke's candidates and picks the ``k`` that may be shown.

    A corrected candidate's score is lowered by ``typo_margin``, and it never ranks above an
    exact candidate that is trusted (logged by several people, or asked before by the user):
    exact matches stay ahead when they are good. Read-only: safe to share across threads.
    """

    def __init__(self, weights: np.ndarray, typo_margin: float = 0.25):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (N_BUCKETS, N_BASE):
            raise ValueError(f"scorer weights of shape {weights.shape}, expected {(N_BUCKETS, N_BASE)}")
        self.weights = weights
        self.typo_margin = typo_margin

    def scores(self, cands: Candidates) -> np.ndarray:
        """The score of each candidate, corrected ones lowered and clamped."""
        weights = self.weights[cands.bucket]
        fixed = cands.corrected
        if fixed is None:
            return cands.features @ weights
        # The exact candidates come first: scored alone, their floating-point sums (and so
        # their ties) are those they have without the corrected ones.
        n = len(fixed) - int(fixed.sum())
        scores = np.concatenate((cands.features[:n] @ weights, cands.features[n:] @ weights - self.typo_margin))
        trusted = ~fixed & cands.features[:, TRUSTED].any(axis=1)
        if trusted.any():
            scores[fixed] = np.minimum(scores[fixed], scores[trusted].min() - 1e-6)
        return scores

    def settled(
        self, exact: Candidates, prefix: str, k: int, blocked: Callable[[str], bool], mine: Container[str]
    ) -> list[Completion] | None:
        """The answer of a keystroke from its exact candidates alone, when no corrected
        candidate could change it (a corrected one ranks below every trusted exact one, so
        ``k`` showable exact candidates that score at least that settle it); else None."""
        trusted = exact.features[:, TRUSTED].any(axis=1)
        if k <= 0 or not trusted.any():
            return None
        scores = exact.features @ self.weights[exact.bucket]
        bound = scores[trusted].min() - 1e-6
        if int((scores >= bound).sum()) < k:  # not k candidates score that, shown or not
            return None
        top = self.shown(exact, scores, prefix, k, blocked, mine)
        if len(top) < k or top[-1].score < bound:
            return None
        return top

    def shown(
        self, cands: Candidates, scores: np.ndarray, prefix: str, k: int, blocked: Callable[[str], bool],
        mine: Container[str],
    ) -> list[Completion]:
        """The first ``k`` candidates by score (ties: the first) that may be shown: never a
        blocked one, and only a corrected one may not start with ``prefix``."""
        out: list[Completion] = []
        # Plain lists: the loop reads a few of each, and a numpy scalar costs more to read.
        corrected = cands.corrected.tolist() if cands.corrected is not None else None
        texts = cands.texts
        # A blocked term in the prefix's whole words is in every query that starts with it.
        head_blocked = blocked(prefix[: prefix.rfind(" ") + 1])
        order = np.argsort(-scores, kind="stable")
        for i, score in zip(order.tolist(), scores[order].tolist()):
            text = texts[i]
            exact = text.startswith(prefix)
            if (exact and head_blocked) or (not exact and (corrected is None or not corrected[i])) or blocked(text):
                continue
            out.append(Completion(text, score, text in mine, not exact))
            if len(out) == k:
                break
        return out
