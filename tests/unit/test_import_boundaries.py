"""Imports flow one way (STYLE.md): the import-linter contracts in pyproject.toml hold, no module
imports itself through a loop, and neither the API process nor the client loads torch."""

import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import REPO

PACKAGES = ("rapid_core", "api", "worker", "store", "rapid_client")


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout


def import_loops(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's strongly
    connected components), counting imports inside functions and TYPE_CHECKING blocks."""
    edges = {m: graph.find_modules_directly_imported_by(m) & graph.modules for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                    if len(group) > 1:
                        loops.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return loops


def test_no_import_loops():
    assert import_loops(grimp.build_graph(*PACKAGES, cache_dir=None)) == []


def test_the_loop_finder_finds_a_loop():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_loops(graph) == [["p.a", "p.b", "p.c"]]


def test_client_does_not_load_torch():
    code = "import sys, rapid_client.cli; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_api_process_does_not_load_torch():
    code = "import sys, api.app; api.app.create_app; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
