"""The model directory on disk: atomic writes, validated read-only loads.

Layout of a model directory::

    manifest.json        format version, build parameters, counts, input checksums, and the
                         size and SHA-256 of every other file
    <name>.marisa        the keys of a prefix index (labels, words, bigrams, transitions)
    <name>.npz           their lexicographic order, weights and range-argmax table
    featurizer.npz       vocabularies and IDF of the featurizer
    tree.npz             the label tree
    weights.npz          the tree's sparse ranker weights
    search.npz           the same weights regrouped by (node, feature) for the beam search
    scorer.npz           the scorer's weights
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np
import scipy.sparse as sp

from .errors import QacError
from .normalize import NORMALIZATION
from .params import FORMAT_VERSION
from .topk import PrefixTopK

MANIFEST = "manifest.json"


class ModelError(QacError):
    """A model directory that is missing, incomplete, damaged or of another format."""


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success it replaces ``target`` at once.

    On any error the temporary directory is removed and ``target`` is left untouched. One
    left behind by a process killed outright is named after that process, and removed by the
    next write to ``target`` once the process is gone (see :func:`remove_stale_siblings`).
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(target)
        tmp = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target), suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ModelError(f"cannot write to {target}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; a model is meant to be shared read-only
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the unfinished model, or the replaced one


def _host() -> str:
    return re.sub(r"[^\w.-]", "_", socket.gethostname())


def _sibling_prefix(target: Path) -> str:
    """``.<name>.<pid>@<host>.``: whose temporary directory beside ``target`` it is."""
    return f".{target.name}.{os.getpid()}@{_host()}."


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check: assume it is
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(target: Path) -> list[Path]:
    """Remove the temporary directories that processes of this host, now gone, left beside
    ``target``; a model a killed swap left moved aside is first put back if ``target`` is
    missing. Returns the paths removed."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    mine = re.compile(rf"\.{re.escape(target.name)}\.(\d+)@(.*)\.[^.]+\.(tmp|old)")
    host = _host()
    removed = []
    for path in parent.iterdir():
        m = mine.fullmatch(path.name)
        if not m or m[2] != host or _alive(int(m[1])):
            continue
        if m[3] == "old" and not os.path.lexists(target):
            try:
                os.rename(path / "model", target)
            except OSError:
                continue  # it may be the only copy: leave it
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


# renameat2(2) swaps two directory entries in one step (Linux 3.15+, glibc 2.28+).
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``; a previous ``target`` ends up at ``new`` or is removed.

    With an atomic exchange ``target`` is never missing; without one it is missing between
    two renames, and :func:`remove_stale_siblings` puts it back if the process dies there.
    """
    try:
        if not os.path.lexists(target):
            os.rename(new, target)
        elif not _exchange(new, target):
            old = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target), suffix=".old", dir=new.parent))
            os.rename(target, old / "model")
            try:
                os.rename(new, target)
            except BaseException:
                os.rename(old / "model", target)
                raise
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise ModelError(f"cannot replace {target}: {exc.strerror or exc}") from exc


def save_prefix_index(index: PrefixTopK, directory: Path, name: str) -> None:
    """Save keys in a marisa-trie, plus their order, weights and argmax table, and the sorted
    keys as one newline-separated UTF-8 text (when no key holds a newline) to load fast."""
    trie = marisa_trie.Trie(index.keys)
    order = np.fromiter((trie[k] for k in index.keys), dtype=np.int32, count=len(index.keys))
    trie.save(str(directory / f"{name}.marisa"))
    arrays = {"order": order, "weights": index.weights, "table": index.table}
    text = "\n".join(index.keys)
    if index.keys and text.count("\n") == len(index.keys) - 1:
        arrays["keys_utf8"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    np.savez(directory / f"{name}.npz", **arrays)  # type: ignore[arg-type]


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
    if "keys_utf8" in arrays:
        # Two C calls instead of a Python loop over every key: a reload in a serving worker
        # takes 0.2 s instead of 0.5 s, the time during which its keystrokes are slower.
        keys = arrays["keys_utf8"].tobytes().decode("utf-8").split("\n")
        sample = np.linspace(0, len(order) - 1, min(len(order), 100)).astype(np.int64).tolist()
        if len(keys) != len(order) or any(trie.get(keys[i]) != order[i] for i in sample):
            raise ModelError(f"the keys in {name}.npz do not match {path}")
    else:  # saved before the keys were
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


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in blocks, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with the current format version and every file's size and SHA-256;
    written last, so a directory without it is unfinished."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format_version": FORMAT_VERSION, "normalization": NORMALIZATION, **manifest, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Check the files the manifest lists: each present with its size, and the SHA-256 of the
    marisa tries and text files (the ``.npz`` files carry CRC-32s that loading checks). Raises ModelError."""
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
        if name.endswith((".marisa", ".txt")) and sha256_file(path) != meta["sha256"]:
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
            f"{directory} has model format {version!r}; this version reads {FORMAT_VERSION}: rebuild it with qac build"
        )
    return manifest
