"""Build parameters: the one source of truth for every default of ``qac build``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 3  # 2: no rare-query filters, no prefix_rare feature; 3: the ranking features named in the manifest
WEIGHTINGS = ("none", "string", "word")
SOURCES = ("tree", "mpc", "prefix", "word", "session", "transitions", "personal", "typo_words", "typo_tree")


@dataclass(frozen=True)
class BuildParams:
    """Everything that decides what ``qac build`` produces; saved in ``manifest.json``."""

    trie_depth: int = 3
    max_leaf: int = 100
    branching: int = 16
    beam: int = 10
    workers: int = 2
    seed: int = 0
    weighting: str = "string"
    prev_weight: float = 0.5
    prefixes_per_query: int = 2
    svm_c: float = 1.0
    prune: float = 0.1
    scorer_days: float = 14.0
    scorer_holdout: float = 0.1
    scorer_prefixes: int = 3
    scorer_c: float = 1.0
    # Keystrokes the scorer is fitted on, at most (with their typo copies beside them): 40,000 as
    # typed hold dev MRR within 0.002 of all 60,783 of train.tsv.gz at 3/4 of the build's CPU.
    scorer_max_examples: int = 40_000
    fit_scorer: bool = True  # False: the fixed popularity-first weights
    sources: tuple[str, ...] = SOURCES
    # Nothing fewer distinct users typed is suggested to anyone else (docs/METHOD.md, "Privacy").
    min_users: int = 3
    default_blocklist: bool = True
    # Share of the scorer's keystrokes of 5+ characters that get a synthetic typo (added as
    # copies beside the clean ones): docs/METHOD.md, "Typo tolerance".
    typo_share: float = 0.3

    def __post_init__(self) -> None:
        if self.trie_depth < 0:
            raise ValueError(f"trie_depth must be >= 0, got {self.trie_depth}")
        if self.max_leaf < 2:
            raise ValueError(f"max_leaf must be >= 2, got {self.max_leaf}")
        if self.branching < 2 or self.branching & (self.branching - 1):
            raise ValueError(f"branching must be a power of two >= 2, got {self.branching}")
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.min_users < 1:
            raise ValueError(f"min_users must be >= 1, got {self.min_users}")
        if not 0.0 <= self.typo_share <= 1.0:
            raise ValueError(f"typo_share must be within [0, 1], got {self.typo_share}")
        unknown = set(self.sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown candidate sources {sorted(unknown)}; known: {SOURCES}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every parameter."""
        d = dataclasses.asdict(self)
        d["sources"] = list(self.sources)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BuildParams:
        """The parameters saved by :meth:`to_json`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown build parameters {sorted(unknown)}")
        d = dict(d)
        if "sources" in d:
            d["sources"] = tuple(d["sources"])
        return cls(**d)

    @property
    def use_tree(self) -> bool:
        return "tree" in self.sources
