"""The completion model: candidates from every source, ranked by the learned scorer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import storage
from .blocklist import Blocklist
from .candidates import FEATURES, N_BASE, N_BUCKETS, CandidateConfig, CandidateGenerator, Candidates
from .normalize import normalize_prefix
from .params import BuildParams
from .personal import PersonalHistory
from .scorer import Completion, Scorer
from .search import SearchIndex, beam_search
from .tfidf import PrefixFeaturizer
from .topk import PrefixTopK
from .tree import LabelTree
from .wordmodel import WordModel


@dataclass
class XRLinear:
    """XR-Linear over the logged queries: the TF-IDF featurizer, the label tree and its node
    rankers, searched by beam."""

    featurizer: PrefixFeaturizer
    tree: LabelTree
    weights: sp.csc_matrix
    beam: int
    topk: int = 20
    index: SearchIndex | None = None  # W regrouped for search; built here if not given

    def __post_init__(self) -> None:
        if self.index is None:  # once here, not on the first keystroke
            self.index = SearchIndex.build(self.tree, self.weights)

    def search(
        self, prefix: str, prev: str, label_range: tuple[int, int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best labels in ``label_range`` (or in any row of an (r, 2) array of ranges) for
        this prefix and previous query."""
        idx, val = self.featurizer.transform_one(prefix, prev)
        assert self.index is not None  # set by __post_init__
        if isinstance(label_range, np.ndarray):
            return beam_search(self.tree, self.index, idx, val, beam=self.beam, topk=self.topk,
                               label_ranges=label_range)
        return beam_search(
            self.tree, self.index, idx, val, beam=self.beam, label_range=label_range, topk=self.topk
        )


class Model:
    """A loaded completion model. Read-only after construction: safe to share across threads."""

    def __init__(
        self,
        params: BuildParams,
        labels: PrefixTopK,
        words: WordModel,
        scorer_weights: np.ndarray,
        tree: XRLinear | None = None,
        manifest: dict[str, Any] | None = None,
        blocklist: Blocklist | None = None,
    ):
        self.params = params
        self.labels = labels
        self.words = words
        self.scorer = Scorer(scorer_weights)
        self.tree = tree
        self.manifest = manifest or {}
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.generator = CandidateGenerator(
            labels,
            words,
            tree.search if tree is not None else None,
            CandidateConfig(sources=params.sources),
        )

    @property
    def version(self) -> str:
        """A short identifier of this build (from the manifest)."""
        return str(self.manifest.get("version", "unsaved"))

    def candidates(
        self, prefix: str, session: Sequence[str] = (), personal: PersonalHistory | None = None
    ) -> Candidates:
        """The candidate table for an already normalized prefix."""
        return self.generator.generate(prefix, session, personal)

    def complete(
        self,
        prefix: str,
        session: Sequence[str] = (),
        k: int = 10,
        *,
        personal: PersonalHistory | None = None,
        blocklist: Blocklist | None = None,
    ) -> list[Completion]:
        """The ``k`` most likely queries starting with ``prefix`` after ``session``.

        ``prefix`` is normalized as typed; ``session`` holds the session's earlier queries,
        newest last; ``personal`` the user's own past queries. Nothing that ``blocklist``
        (default: the model's own) blocks is returned, whatever its source, nor any of its
        sensitive terms that the prefix does not hold whole. Fewer than ``k``
        candidates are topped up with the most popular logged queries that start with the prefix.
        """
        prefix = normalize_prefix(prefix)
        blocked = (self.blocklist if blocklist is None else blocklist).hider(prefix)
        mine = personal if personal is not None and "personal" in self.params.sources else ()
        keystroke = self.generator.exact(prefix, session, personal)
        if keystroke.may_hold_typo:
            settled = self.scorer.settled(keystroke.candidates, prefix, k, blocked, mine)
            if settled is not None:  # no corrected candidate could change the answer
                return settled
        cands = self.generator.corrected(keystroke)
        out = self.scorer.shown(cands, self.scorer.scores(cands), prefix, k, blocked, mine)
        if len(out) == k:
            return out
        have = {c.query for c in out}
        floor = min((c.score for c in out), default=0.0)
        for i in self.labels.top(prefix, 2 * k + len(out)):
            query = self.labels.keys[i]
            if query not in have and not blocked(query):
                floor -= 1.0
                out.append(Completion(query, floor, query in mine))
                if len(out) == k:
                    break
        return out

    def most_popular(self, prefix: str, k: int = 10) -> list[Completion]:
        """Most-popular completion: the ``k`` logged queries with the prefix, by count."""
        prefix = normalize_prefix(prefix)
        labels = self.labels
        return [Completion(labels.keys[i], float(labels.weights[i])) for i in labels.top(prefix, k)]

    def save(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Write every component into an existing empty ``directory``."""
        directory = Path(directory)
        storage.save_prefix_index(self.labels, directory, "labels")
        storage.save_prefix_index(self.words.words, directory, "words")
        storage.save_prefix_index(self.words.bigrams, directory, "bigrams")
        storage.save_prefix_index(self.words.transitions, directory, "transitions")
        np.savez(directory / "scorer.npz", weights=self.scorer.weights)
        if self.tree is not None:
            np.savez(directory / "featurizer.npz", **self.tree.featurizer.to_arrays())  # type: ignore[arg-type]
            np.savez(directory / "tree.npz", **self.tree.tree.to_arrays())  # type: ignore[arg-type]
            storage.save_sparse(directory, "weights", self.tree.weights)
            assert self.tree.index is not None
            np.savez(directory / "search.npz", **self.tree.index.to_arrays())  # type: ignore[arg-type]
        (directory / "blocklist.txt").write_text(self.blocklist.to_text(), encoding="utf-8")
        (directory / "sensitive.txt").write_text(self.blocklist.sensitive_text(), encoding="utf-8")
        storage.write_manifest(directory, {**manifest, "params": self.params.to_json(), "features": list(FEATURES),
                                           "blocklist": {"terms": len(self.blocklist),
                                                         "sha256": self.blocklist.digest()},
                                           "sensitive": {"terms": len(self.blocklist.sensitive),
                                                         "sha256": self.blocklist.sensitive_digest()}})
        self.manifest = storage.read_manifest(directory)


def load(directory: str | Path) -> Model:
    """Load a model directory written by ``qac build``; raises :class:`storage.ModelError`."""
    directory = Path(directory)
    manifest = storage.read_manifest(directory)
    storage.verify_files(directory, manifest)
    try:
        params = BuildParams.from_json(manifest["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise storage.ModelError(f"bad build parameters in {directory}: {exc}") from exc
    labels = storage.load_prefix_index(directory, "labels")
    words = WordModel(
        storage.load_prefix_index(directory, "words"),
        storage.load_prefix_index(directory, "bigrams"),
        storage.load_prefix_index(directory, "transitions"),
    )
    if manifest.get("features") != list(FEATURES):
        raise storage.ModelError(f"{directory} was built with other ranking features than this version's: "
                                 "rebuild it with qac build")
    scorer_weights = storage.load_arrays(directory, "scorer").get("weights")
    if scorer_weights is None or scorer_weights.shape != (N_BUCKETS, N_BASE):
        raise storage.ModelError(f"scorer.npz in {directory} does not fit {N_BUCKETS}x{N_BASE} features")
    try:
        blocklist = Blocklist.from_text(*((directory / name).read_text(encoding="utf-8")
                                          for name in ("blocklist.txt", "sensitive.txt")))
    except (OSError, UnicodeDecodeError) as exc:
        raise storage.ModelError(f"model file damaged or missing: {exc}") from exc
    tree = None
    if params.use_tree:
        featurizer = PrefixFeaturizer.from_arrays(
            storage.load_arrays(directory, "featurizer"),
            {"weighting": params.weighting, "prev_weight": params.prev_weight},
        )
        label_tree = LabelTree.from_arrays(storage.load_arrays(directory, "tree"))
        weights = storage.load_sparse(directory, "weights")
        try:
            search = SearchIndex.from_arrays(storage.load_arrays(directory, "search"))
        except (KeyError, ValueError, TypeError) as exc:
            raise storage.ModelError(f"model file damaged: {directory / 'search.npz'} ({exc})") from exc
        tree = XRLinear(featurizer, label_tree, weights, params.beam, index=search)
    return Model(params, labels, words, scorer_weights, tree, manifest, blocklist)
