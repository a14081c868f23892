"""Shared fixtures: real things (a tiny random model built once, temporary output directories)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("RAPID_DATASETS_DIR", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from rapid_core.models import TINY_ALIAS, ensure_tiny_model

    ensure_tiny_model()
    return TINY_ALIAS
