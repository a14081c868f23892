"""Imports flow one way: api -> store, worker -> store + rapid_core; rapid_core imports no web/queue/db
code; the API process and the client never load torch."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

FORBIDDEN = {
    "rapid_core": {"fastapi", "starlette", "celery", "kombu", "sqlalchemy", "alembic", "api", "worker", "store"},
    # store/broker.py holds the Celery client both sides share: the API enqueues by task name only.
    "store": {"api", "worker", "torch", "fastapi"},
    "api": {"worker", "torch"},
    "worker": {"api", "fastapi"},
    # the client talks HTTP only: a user's machine needs neither torch nor the server's packages
    "rapid_client": {"api", "worker", "store", "rapid_core", "torch", "fastapi", "sqlalchemy", "celery"},
}


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_may(package):
    root = REPO / package
    if not root.is_dir():
        pytest.fail(f"package {package} is missing")
    bad = []
    for path in root.rglob("*.py"):
        for name in imported_roots(path):
            if name in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, bad


def test_client_does_not_load_torch():
    code = "import sys, rapid_client.cli; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_api_process_does_not_load_torch():
    code = "import sys, api.app; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
