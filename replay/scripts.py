"""What a replay types: sessions as scripts of queries, each typed keystroke by keystroke or
only submitted, from a query log or from evaluation pairs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.evaluate import read_pairs
from indexer.train.examples import protocol_pairs
from indexer.train.logs import read_logs
from indexer.train.sessions import sessions_of


@dataclass(frozen=True)
class Typed:
    """One query of a session: the prefixes typed for it (none: only submitted) and, for an
    evaluation pair, the index of the pair's sampled prefix among them."""

    target: str
    keystrokes: tuple[str, ...] = ()
    sampled: int | None = None


Script = tuple[Typed, ...]


def keystrokes_of(query: str) -> tuple[str, ...]:
    """Every prefix of ``query`` a user types on the way to it, shortest first."""
    return tuple(query[:i] for i in range(1, len(query) + 1))


def typed_keystrokes(scripts: Iterable[Script]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each keystroke of ``scripts`` with the queries its session submitted before it
    (oldest first): what a ranking of it is asked, as the load sends them."""
    for script in scripts:
        earlier: list[str] = []
        for typed in script:
            for prefix in typed.keystrokes:
                yield prefix, tuple(earlier)
            earlier.append(typed.target)


# A session's user (None: not known) and its script.
UserScript = tuple[str | None, Script]


def user_scripts_from_log(paths: Sequence[str | Path], limit: int | None = None, *,
                          columns: Mapping[str, int | str] | None = None) -> list[UserScript]:
    """Sessions of a log cut as the indexer cuts them, each with the log's user id; sessions
    of one query type nothing and are left out. The log is read as ``qac build`` reads it
    (:func:`indexer.train.logs.read_logs`, with ``columns`` from ``--columns``). The sampled prefix
    of each typed query is drawn as the published protocol draws it
    (:func:`indexer.train.examples.protocol_pairs`)."""
    rows, _ = read_logs([Path(p) for p in paths], columns=columns)
    sessions = sessions_of(rows)
    draws = iter(protocol_pairs(sessions))
    scripts: list[UserScript] = []
    for session in sessions:
        if len(session) < 2:
            continue
        steps = [Typed(session[0].query)]
        for row in session[1:]:
            steps.append(Typed(row.query, keystrokes_of(row.query), len(next(draws).prefix) - 1))
        scripts.append((session[0].user, tuple(steps)))
        if limit is not None and len(scripts) >= limit:
            break
    return scripts


def scripts_from_log(paths: Sequence[str | Path], limit: int | None = None) -> list[Script]:
    """:func:`user_scripts_from_log` without the users."""
    return [script for _, script in user_scripts_from_log(paths, limit)]


def scripts_from_pairs(path: str | Path, limit: int | None = None) -> list[Script]:
    """:func:`user_scripts_from_pairs` without the users."""
    return [script for _, script in user_scripts_from_pairs(path, limit)]


def user_scripts_from_pairs(path: str | Path, limit: int | None = None) -> list[UserScript]:
    """One session per pair, with the pair's ``user``: submit ``prev_query`` (if any), then
    type ``next_query``."""
    scripts: list[UserScript] = []
    for pair in read_pairs(path, limit):
        keys = list(keystrokes_of(pair.next_query))
        if pair.prefix in keys:
            sampled = keys.index(pair.prefix)
        else:  # not a prefix of the target: typed too, where its length puts it
            sampled = min(len(pair.prefix), len(keys))
            keys.insert(sampled, pair.prefix)
        typed = Typed(pair.next_query, tuple(keys), sampled)
        scripts.append((pair.user, (Typed(pair.prev_query), typed) if pair.prev_query else (typed,)))
    return scripts
