"""The model directory on disk: atomic writes, validated read-only loads.

Layout of a model directory::

    manifest.json        format version, build parameters, counts, input checksums, and the
                         size and SHA-256 of every other file
    <name>.marisa        the keys of a prefix index (labels, words, bigrams, transitions)
    <name>.npz           their lexicographic order, weights and range-argmax table
    featurizer.npz       vocabularies and IDF of the featurizer
    tree.npz             the label tree
    weights.npz          the tree's sparse ranker weights
    reranker.npz         the reranker's weights
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np
import scipy.sparse as sp

from .params import FORMAT_VERSION
from .topk import PrefixTopK

MANIFEST = "manifest.json"


class ModelError(Exception):
    """A model directory that is missing, incomplete, damaged or of another format."""


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it replaces ``target`` at once.

    On any error the temporary directory is removed and ``target`` is left untouched.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ModelError(f"cannot write to {target}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; a model is meant to be shared read-only
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rename(target, old / "model")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_prefix_index(index: PrefixTopK, directory: Path, name: str) -> None:
    """Save keys in a marisa-trie, plus their order, weights and argmax table."""
    trie = marisa_trie.Trie(index.keys)
    order = np.fromiter((trie[k] for k in index.keys), dtype=np.int32, count=len(index.keys))
    trie.save(str(directory / f"{name}.marisa"))
    np.savez(directory / f"{name}.npz", order=order, weights=index.weights, table=index.table)


def load_prefix_index(directory: Path, name: str) -> PrefixTopK:
    """Load what :func:`save_prefix_index` wrote; the trie and table are memory-mapped."""
    trie = marisa_trie.Trie()
    path = directory / f"{name}.marisa"
    try:
        trie.mmap(str(path))
    except Exception as exc:  # marisa raises bare Exceptions
        raise ModelError(f"cannot read {path}: {exc}") from exc
    arrays = load_arrays(directory, name)
    order = arrays["order"]
    if len(trie) != len(order):
        raise ModelError(f"{path} holds {len(trie)} keys, {name}.npz expects {len(order)}")
    keys = [trie.restore_key(i) for i in order.tolist()]
    return PrefixTopK(keys, arrays["weights"], arrays["table"])


def load_arrays(directory: Path, name: str) -> dict[str, np.ndarray]:
    """All arrays of ``<name>.npz``, with a clear error for a missing or damaged file."""
    path = directory / f"{name}.npz"
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"model file damaged: {path} ({exc})") from exc


def save_sparse(directory: Path, name: str, matrix: sp.spmatrix) -> None:
    """Save a sparse matrix as ``<name>.npz`` in CSC form (what :func:`load_sparse` reads)."""
    m = sp.csc_matrix(matrix)
    np.savez(directory / f"{name}.npz", data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))


def load_sparse(directory: Path, name: str) -> sp.csc_matrix:
    """The CSC matrix of ``<name>.npz``, with the errors of :func:`load_arrays`."""
    arrays = load_arrays(directory, name)
    try:
        shape = tuple(int(n) for n in arrays["shape"])
        return sp.csc_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"model file damaged: {directory / name}.npz ({exc})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with the current format version and every file's size and SHA-256;
    written last, so a directory without it is unfinished."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format_version": FORMAT_VERSION, **manifest, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Check the files the manifest lists: each present with its size, and the SHA-256 of the
    marisa tries (the ``.npz`` files carry CRC-32s that loading checks). Raises ModelError."""
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(m, dict) and {"bytes", "sha256"} <= m.keys()
                                              for m in files.values()):
        raise ModelError(f"damaged {directory / MANIFEST}: bad 'files' entry")
    for name, meta in files.items():
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            raise ModelError(f"model file missing: {path}") from None
        if size != meta["bytes"]:
            raise ModelError(f"model file damaged: {path} has {size} bytes, the manifest says {meta['bytes']}")
        if name.endswith(".marisa") and _sha256(path) != meta["sha256"]:
            raise ModelError(f"model file damaged: {path} does not match its SHA-256 in the manifest")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check ``manifest.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory not found: {directory}")
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelError(f"not a model directory (no {MANIFEST}): {directory}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"damaged {path}: {exc}") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{directory} has model format {version!r}; this version reads {FORMAT_VERSION}"
        )
    return manifest
