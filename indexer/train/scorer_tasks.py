"""The scorer's training keystrokes as executor tasks: candidates and features of many keystrokes at
once, on every worker, with the same rows, in the same order, as one pass in the driver.

A task gets the keystrokes of a few users, ordered by user and time, so that it rebuilds each
user's history once per moment (the keystrokes of one pair, and their typo copies, share it)
instead of once per keystroke; the driver puts the rows back in the keystrokes' order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..model import Model
from ..personal import PersonalHistory, replay_histories
from .examples import Example
from .executors import Executor
from .scorer import collect_training_rows

# Keystrokes per task: a few dozen tasks for a log's 70-100k, so both workers stay busy to the end.
TASK_KEYSTROKES = 2_000

Events = Mapping[str, Sequence[tuple[float, str]]]
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ScorerInputs:
    """What every task reads: the early model and each user's logged (time, query) events
    (none: keystrokes without personal history). Pickled as the model's parts, for a Dask
    worker to rebuild it."""

    def __init__(self, model: Model, events: Events | None):
        self.model = model
        self.events = events

    def __reduce__(self) -> tuple[Callable[..., ScorerInputs], tuple[Any, ...]]:
        m = self.model
        return _rebuild, (m.params, m.labels, m.words, m.scorer.weights, m.tree, m.blocklist, self.events)


def _rebuild(params: Any, labels: Any, words: Any, scorer_weights: Any, tree: Any, blocklist: Any,
             events: Events | None) -> ScorerInputs:
    return ScorerInputs(Model(params, labels, words, scorer_weights, tree, blocklist=blocklist), events)


def shared_histories(events: Events, examples: Sequence[Example]) -> list[PersonalHistory | None]:
    """Each example's user's history just before its time (see
    :func:`~indexer.personal.replay_histories`), one object per distinct (user, time): ranking
    only reads a history."""
    asks = list(dict.fromkeys((e.user, e.time) for e in examples))
    at = dict(zip(asks, replay_histories(events, asks)))
    return [at[(e.user, e.time)] for e in examples]


def _task(inputs: ScorerInputs, payload: tuple[np.ndarray, list[Example]]) -> tuple[int, Rows]:
    """The training rows of some keystrokes, their group ids being the keystrokes' ids."""
    ids, examples = payload
    personal: Sequence[PersonalHistory | None] = (
        shared_histories(inputs.events, examples) if inputs.events is not None else [None] * len(examples)
    )
    X, y, groups, buckets = collect_training_rows(examples, personal, inputs.model.candidates)
    return len(examples), (X, y, ids[groups], buckets)


def _tasks(examples: Sequence[Example], size: int) -> Iterator[tuple[np.ndarray, list[Example]]]:
    """The keystrokes by user and time (ties: in their order), ``size`` per task."""
    order = sorted(range(len(examples)), key=lambda i: (examples[i].user or "", examples[i].time or 0.0, i))
    for start in range(0, len(order), size):
        ids = np.array(order[start : start + size], dtype=np.int32)
        yield ids, [examples[i] for i in ids.tolist()]


def collect_in_tasks(
    examples: Sequence[Example],
    model: Model,
    events: Events | None,
    executor: Executor,
    progress: Callable[[int], None] | None = None,
    task_keystrokes: int = TASK_KEYSTROKES,
) -> Rows:
    """:func:`~indexer.train.scorer.collect_training_rows` of ``examples`` on ``model``'s
    candidates, each with its user's history from ``events`` (None: without), computed as
    tasks on ``executor``: the same arrays, whatever ran them."""
    on_result = None if progress is None else (lambda result: progress(result[0]))
    parts = [rows for _, rows in executor.map(_task, _tasks(examples, task_keystrokes),
                                                ScorerInputs(model, events), on_result)]
    if not parts:
        return collect_training_rows([], [], model.candidates)
    X, y, groups, buckets = (np.concatenate([p[k] for p in parts]) for k in range(4))
    # Back in the keystrokes' order; a keystroke's rows stay in its candidates' order.
    order = np.argsort(groups, kind="stable")
    return X[order], y[order], groups[order], buckets[order]
