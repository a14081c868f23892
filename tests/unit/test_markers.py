"""The fast loop skips what needs services or the real model: markers come from the test's folder."""

import pytest

from tests.conftest import REPO

FILES = [
    "tests/integration/test_graders_datasets.py",
    "tests/slow/test_smollm2.py",
    "tests/unit/test_markers.py",
]


class Collected:
    def __init__(self):
        self.files: set[str] = set()

    def pytest_collection_finish(self, session):
        self.files = {item.path.name for item in session.items}


def selected(expression: str) -> set[str]:
    found = Collected()
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), "-m", expression]
    pytest.main(args + [str(REPO / f) for f in FILES], plugins=[found])
    return found.files


def test_fast_selection_leaves_out_the_integration_and_slow_folders():
    assert selected("not integration and not slow") == {"test_markers.py"}
    assert selected("integration") == {"test_graders_datasets.py"}
    assert selected("slow") == {"test_smollm2.py"}
