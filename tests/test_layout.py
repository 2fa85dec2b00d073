"""The layout keeps its promises: no import cycles, the libraries never import the command or
each other the wrong way, and serving loads no trainer, no Dask and no matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("indexer", "server", "replay", "qac")
# Which project packages each package may import (besides itself).
ALLOWED = {"indexer": set(), "server": {"indexer"}, "replay": {"indexer", "server"},
           "qac": {"indexer", "server", "replay"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Project modules that ``path`` imports, anywhere in the file (lazy imports count).

    ``from pkg import name`` imports the module ``pkg.name`` when there is one, else ``pkg``.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def test_the_graph_is_read_from_the_code() -> None:
    g = graph()
    assert "indexer.train.node_rankers" in g["indexer.train.build"]
    assert "indexer.search" in g["indexer.model"]


def test_no_module_imports_itself_back_through_others() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for start in sorted(g):
        if start not in state and visit(start, []):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = {(name, m) for name, targets in graph().items() if name.split(".")[0] == package
             for m in targets if m.split(".")[0] not in ALLOWED[package] | {package}}
    assert not wrong, sorted(wrong)


def test_what_serves_a_model_never_imports_the_trainer() -> None:
    wrong = {(name, m) for name, targets in graph().items()
             if name.startswith("server") or (name.startswith("indexer") and not name.startswith("indexer.train"))
             for m in targets if m.startswith("indexer.train")}
    assert not wrong, sorted(wrong)


def test_serving_a_model_loads_no_scikit_learn_no_dask_and_no_matplotlib(small_model_dir: Path) -> None:
    """Each worker would carry them (about 55 MB of scikit-learn and the scipy it pulls in)."""
    code = (
        "import sys, server.app, server.main, indexer\n"
        f"m = indexer.load({str(small_model_dir)!r}); m.complete('new y', ['weather'])\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('sklearn', 'dask', 'distributed', "
        "'matplotlib', 'indexer.train', 'replay', 'qac')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_sample_log_and_the_demo_page_are_package_data() -> None:
    from importlib import resources

    assert (resources.files("indexer") / "data" / "sample.tsv.gz").is_file()
    for name in ("index.html", "qac-client.js", "demo.js", "demo.css"):
        assert (resources.files("static") / name).is_file()


def test_scripts_use_public_names_only() -> None:
    """A script measures what users run: it imports no private name of the project's packages."""
    private = []
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private
