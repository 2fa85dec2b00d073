"""A build killed or interrupted halfway leaves the previous model directory as it was, and
what it left behind is cleaned up by the next build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import indexer
from indexer import storage
from indexer.storage import atomic_directory, remove_stale_siblings
from indexer.train.build import build
from tests.support import SMALL_PARAMS

# `qac build`, paused for good once half the model is written, after telling the test where.
PAUSED_BUILD = """
import os, signal, sys, time
from pathlib import Path
from indexer import storage
from qac.main import main

real = storage.save_prefix_index

def save_then_pause(index, directory, name):
    real(index, directory, name)
    if name == "words":
        ready = Path(os.environ["QAC_TEST_READY"])
        ready.with_suffix(".part").write_text(str(directory))
        ready.with_suffix(".part").replace(ready)
        time.sleep(600)

storage.save_prefix_index = save_then_pause
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if inherited ignored
sys.exit(main(sys.argv[1:]))
"""


def tiny_log(path: Path, word: str) -> Path:
    """300 timed rows of 23 queries by 5 users: a model in a fraction of a second."""
    rows = "".join(f"u{i % 5}\t{word} {i % 23}\t2006-03-0{1 + i % 9} 10:00:00\n" for i in range(300))
    path.write_text("AnonID\tQuery\tQueryTime\n" + rows)
    return path


def siblings(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def version(out: Path) -> str:
    return indexer.load(out).manifest["version"]


@pytest.fixture
def old_model(tmp_path: Path) -> Path:
    out = tmp_path / "models" / "model"
    build([tiny_log(tmp_path / "old.tsv", "old")], out, SMALL_PARAMS, quiet=True)
    return out


def start_paused_build(tmp_path: Path, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A ``qac build`` of a new log into ``out``, and its half-written temporary directory."""
    ready = tmp_path / "ready"
    log = tiny_log(tmp_path / "new.tsv", "new")
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_BUILD, "build", "--log", str(log), "--out", str(out),
         "--workers", "1", "--max-leaf", "50", "--quiet"],
        env={**os.environ, "QAC_TEST_READY": str(ready)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the build never paused: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    return proc, Path(ready.read_text())


def test_a_build_killed_halfway_leaves_the_old_model_and_the_next_build_cleans_up(tmp_path, old_model):
    old = version(old_model)
    proc, tmp = start_paused_build(tmp_path, old_model)
    assert tmp.parent == old_model.parent and (tmp / "words.marisa").is_file()
    assert not (tmp / "manifest.json").exists()

    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert version(old_model) == old
    assert siblings(old_model) == [tmp]  # stale, its process gone

    build([tiny_log(tmp_path / "newer.tsv", "newer")], old_model, SMALL_PARAMS, quiet=True)
    model = indexer.load(old_model)
    assert model.manifest["version"] != old and model.labels.keys[0].startswith("newer")
    assert siblings(old_model) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_build_removes_its_temporary_directory(tmp_path, old_model, sig, code):
    old = version(old_model)
    proc, tmp = start_paused_build(tmp_path, old_model)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    assert not tmp.exists() and siblings(old_model) == []
    assert version(old_model) == old


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_siblings_of_dead_processes_are_removed_others_kept(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    host = storage._host()
    stale = tmp_path / f".model.{dead_pid()}@{host}.abc_1234.tmp"
    live = tmp_path / f".model.{os.getpid()}@{host}.abc_1234.tmp"
    elsewhere = tmp_path / f".model.{dead_pid()}@not-{host}.abc_1234.tmp"
    other_model = tmp_path / f".other.{dead_pid()}@{host}.abc_1234.tmp"
    for path in (stale, live, elsewhere, other_model):
        path.mkdir()
    assert remove_stale_siblings(out) == [stale]
    assert siblings(out) == sorted([live, elsewhere]) and other_model.is_dir()


def test_a_model_moved_aside_by_a_killed_swap_is_put_back(tmp_path, old_model):
    old = version(old_model)
    aside = old_model.parent / f".model.{dead_pid()}@{storage._host()}.abc_1234.old"
    aside.mkdir()
    os.rename(old_model, aside / "model")  # killed between the two renames of a swap
    remove_stale_siblings(old_model)
    assert version(old_model) == old and siblings(old_model) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_directory_replaces_the_target_and_leaves_nothing_beside_it(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    out = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_directory(out) as tmp:
            (tmp / "file").write_text(content)
        assert (out / "file").read_text() == content and siblings(out) == []
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "file").write_text("third")
        raise RuntimeError
    assert (out / "file").read_text() == "second" and siblings(out) == []
