"""Building on a Dask cluster: the same model as local processes, and clear failures."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import indexer
from indexer.params import BuildParams
from indexer.tfidf import PrefixFeaturizer
from indexer.train import build as build_module
from indexer.train import node_rankers as xlinear
from indexer.train.build import build, featurize
from indexer.train.cluster import build_label_tree
from indexer.train.executors import DaskExecutor, ExecutorError, LocalExecutor, open_executor
from qac.main import main
from tests.support import make_data

# Two local workers, so big nodes are split by edges as on a real build.
PARAMS = BuildParams(workers=2, max_leaf=50, min_users=1)


def _square(shared: int, x: int) -> int:
    return shared + x * x


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def small_tasks():
    """Small chunks, so even the small log makes many tasks of each stage."""
    mp = pytest.MonkeyPatch()
    mp.setattr(build_module, "FEATURE_CHUNK_ROWS", 500)
    mp.setattr(xlinear, "_CHUNK_COST", 20_000)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def both_builds(tmp_path_factory, small_log, client, small_tasks):
    """The small log built with local processes and on the LocalCluster."""
    root = tmp_path_factory.mktemp("dask")
    local, dask = root / "local", root / "dask"
    build([small_log], local, PARAMS, quiet=True)
    build([small_log], dask, PARAMS, quiet=True, executor=DaskExecutor(client))
    return indexer.load(local), indexer.load(dask)


@pytest.mark.parametrize("executor", ["local-1", "local-2", "dask"])
def test_map_returns_results_in_task_order_and_reports_each(executor, request):
    if executor == "dask":
        runner = DaskExecutor(request.getfixturevalue("client"))
    else:
        runner = LocalExecutor(int(executor[-1]))
    seen: list[int] = []
    out = runner.map(_square, iter(range(20)), shared=1, on_result=seen.append)
    assert out == [1 + x * x for x in range(20)]
    assert sorted(seen) == out


def test_task_errors_reach_the_caller(client):
    with pytest.raises(TypeError):
        DaskExecutor(client).map(_square, ["a"], shared=1)


def test_featurizing_in_chunks_equals_one_batch():
    labels, prefixes, prevs, _ = make_data()
    f = PrefixFeaturizer().fit(labels, prevs)
    whole = f.transform(prefixes, prevs)
    chunked = featurize(f, prefixes, prevs, LocalExecutor(2), chunk_rows=37)
    assert (whole != chunked).nnz == 0
    assert np.array_equal(whole.indptr, chunked.indptr) and np.array_equal(whole.indices, chunked.indices)


def test_each_ranker_task_gets_only_the_rows_of_its_nodes():
    labels, prefixes, prevs, y = make_data()
    f = PrefixFeaturizer().fit(labels, prevs)
    tree = build_label_tree(labels, f.embed(labels), trie_depth=1, max_leaf=6, branching=4)
    X = f.transform(prefixes, prevs)
    chunks, payloads = xlinear.ranker_tasks(tree, X, y, workers=2)
    payloads = list(payloads)
    assert len(payloads) == len(chunks)
    for part in (p for payload in payloads for p in payload):
        under = (y >= tree.node_lo[part.node]) & (y < tree.node_hi[part.node])
        assert part.X.shape[0] == part.target.shape[0] <= under.sum()
        if part.node != 0:
            assert part.X.shape[0] < X.shape[0]


def test_local_cluster_builds_the_same_weights(both_builds):
    local, dask = both_builds
    a, b = local.tree.weights, dask.tree.weights
    assert a.shape == b.shape and a.nnz == b.nnz > 0
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)
    for name, arr in local.tree.tree.to_arrays().items():
        assert np.array_equal(arr, dask.tree.tree.to_arrays()[name]), name
    assert np.array_equal(local.scorer.weights, dask.scorer.weights)


def test_local_cluster_builds_the_same_answers(both_builds, small_log):
    local, dask = both_builds
    queries = sorted(local.labels.keys)[:: max(1, len(local.labels.keys) // 60)]
    for i, query in enumerate(queries):
        history = [queries[i - 1]] if i % 2 else []
        for cut in (1, 3, len(query)):
            assert local.complete(query[:cut], history) == dask.complete(query[:cut], history)


def test_where_it_was_built_is_not_a_build_parameter(both_builds):
    local, dask = both_builds
    assert local.manifest["params"] == dask.manifest["params"] == PARAMS.to_json()


def test_unreachable_scheduler_fails_clearly_and_writes_nothing(tmp_path, small_log, capsys):
    dask = pytest.importorskip("dask")
    out = tmp_path / "model"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["build", "--log", str(small_log), "--out", str(out), "--dask", "tcp://127.0.0.1:9", "--quiet"])
    assert code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_address_without_a_scheme_is_refused(tmp_path, small_log, capsys):
    pytest.importorskip("distributed")
    out = tmp_path / "model"
    assert main(["build", "--log", str(small_log), "--out", str(out), "--dask", "scheduler:8786", "--quiet"]) == 2
    assert "tcp://HOST:8786" in capsys.readouterr().err
    assert not out.exists()


def test_without_dask_installed_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ExecutorError, match=r"pip install 'qac\[dask\]'"):
        with open_executor("tcp://127.0.0.1:8786", 2):
            pass


def test_build_help_documents_dask(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--dask ADDRESS" in text
    assert "tcp://HOST:PORT" in text and "local[:N]" in text


def test_without_dask_the_build_runs_on_local_processes():
    with open_executor(None, 3) as executor:
        assert isinstance(executor, LocalExecutor) and executor.workers == 3
