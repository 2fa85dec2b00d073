"""Training and evaluation examples: (previous query, prefix, next query) from sessions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .logs import LogRow


@dataclass(frozen=True, slots=True)
class Example:
    """What the session had asked before (newest last), what the user typed, and what they
    asked; who asked it and when, where the log says."""

    session: tuple[str, ...]
    prefix: str
    target: str
    user: str | None = None
    time: float | None = None

    @property
    def prev(self) -> str:
        return self.session[-1] if self.session else ""


def protocol_pairs(sessions: Sequence[Sequence[LogRow]], seed: int = 0) -> list[Example]:
    """Evaluation pairs exactly as ``dev.pairs.jsonl`` was made.

    Every consecutive pair in a session, with one prefix length drawn uniformly from
    1..len(next) by ``RandomState(seed)``, in session order. The session is the whole
    session so far (the published protocol only uses its last query).
    """
    rng = np.random.RandomState(seed)
    pairs = []
    for session in sessions:
        queries = [r.query for r in session]
        for i in range(1, len(queries)):
            target = queries[i]
            cut = rng.randint(1, len(target) + 1)
            pairs.append(Example(tuple(queries[:i]), target[:cut], target, session[i].user, session[i].time))
    return pairs


def training_examples(
    sessions: Sequence[Sequence[LogRow]], prefixes_per_query: int = 2, seed: int = 0
) -> list[Example]:
    """Examples for the label tree: every query of a session, first ones included.

    Each query gives ``prefixes_per_query`` examples with prefix lengths drawn uniformly
    (without repetition) from 1..len(query).
    """
    rng = np.random.default_rng(seed)
    examples = []
    for session in sessions:
        queries = [r.query for r in session]
        for i, target in enumerate(queries):
            before = tuple(queries[max(0, i - 1) : i])
            n = min(prefixes_per_query, len(target))
            for cut in rng.choice(len(target), size=n, replace=False) + 1:
                examples.append(Example(before, target[:cut], target))
    return examples
