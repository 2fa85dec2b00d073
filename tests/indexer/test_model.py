import json
import shutil
import threading
from pathlib import Path

import pytest

import indexer
from indexer import ModelError
from indexer.params import FORMAT_VERSION


@pytest.fixture(scope="module")
def model(small_model_dir):
    return indexer.load(small_model_dir)


PREFIXES = ["a", "ho", "www", "new y", "the ", "zzzz", "", "bank of"]


def test_every_completion_starts_with_the_normalized_prefix(model):
    for prefix in PREFIXES + ["New Y", "www.g"]:
        norm = indexer.normalize(prefix) + (" " if prefix.endswith((" ", ".")) else "")
        for c in model.complete(prefix, ["weather"]):
            assert c.query.startswith(norm), (prefix, c.query)


def test_results_are_ranked_and_bounded(model):
    out = model.complete("a", [], k=10)
    assert len(out) == 10
    assert [c.score for c in out] == sorted((c.score for c in out), reverse=True)
    assert len({c.query for c in out}) == 10


def test_never_empty_while_a_logged_query_has_the_prefix(model):
    for i in model.labels.top("", 30):
        label = model.labels.keys[i]
        assert model.complete(label[:3]), label


def test_empty_prefix_with_history_proposes_next_queries(model):
    transitions = model.words.transitions
    prev, nxt = transitions.keys[transitions.top("", 1)[0]].split("\t")
    assert nxt in [c.query for c in model.complete("", [prev])]


def test_save_load_and_rank_again_gives_identical_results(model, small_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_model_dir, copy)
    again = indexer.load(copy)
    for prefix in PREFIXES:
        assert again.complete(prefix, ["weather"]) == model.complete(prefix, ["weather"])


def test_threads_share_a_model(model):
    expected = {p: model.complete(p, ["weather"]) for p in PREFIXES}
    errors = []

    def work():
        for _ in range(20):
            for p in PREFIXES:
                if model.complete(p, ["weather"]) != expected[p]:
                    errors.append(p)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("name", ["labels.npz", "scorer.npz", "weights.npz", "tree.npz", "labels.marisa"])
def test_truncated_model_file_gives_a_clear_error(small_model_dir, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(small_model_dir, copy)
    path = copy / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=name.split(".")[0]):
        indexer.load(copy)


def test_missing_model_file_gives_a_clear_error(small_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_model_dir, copy)
    (copy / "featurizer.npz").unlink()
    with pytest.raises(ModelError, match="featurizer"):
        indexer.load(copy)


def test_not_a_model_directory(tmp_path: Path):
    with pytest.raises(ModelError, match="manifest"):
        indexer.load(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        indexer.load(tmp_path / "nope")


def test_a_model_of_an_older_format_is_refused_with_the_way_out(small_model_dir, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(small_model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(ModelError, match="model format 2; this version reads 3: rebuild it with qac build"):
        indexer.load(copy)


def test_a_model_of_other_ranking_features_is_refused(small_model_dir, tmp_path):
    """The scorer's weights are read by feature position: a model whose manifest names other
    features (one appended, or two swapped) is refused, never padded or misread."""
    manifest = json.loads((small_model_dir / "manifest.json").read_text())
    names = manifest["features"]
    for other in (names + ["a_new_feature"], [names[1], names[0], *names[2:]]):
        copy = tmp_path / str(len(other)) / other[0]
        shutil.copytree(small_model_dir, copy)
        (copy / "manifest.json").write_text(json.dumps({**manifest, "features": other}))
        with pytest.raises(ModelError, match="other ranking features.*rebuild it with qac build"):
            indexer.load(copy)


def test_manifest_describes_the_build(model):
    m = model.manifest
    assert m["format_version"] == FORMAT_VERSION == 3
    assert m["params"]["trie_depth"] == 3
    assert m["counts"]["labels"] == len(model.labels)
    assert all(len(v) == 64 for v in m["inputs"].values())
