"""Shared fixtures (real things: a tiny random model built once, a fresh store) and the markers each
folder's tests carry: tests/integration -> integration, tests/slow -> slow."""

from pathlib import Path

import pytest

from rapid_core.settings import core_settings

REPO = Path(__file__).resolve().parents[1]
DATASETS = core_settings().datasets_dir
FOLDER_MARKERS = {"integration": pytest.mark.integration, "slow": pytest.mark.slow}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(item.fspath).relative_to(REPO / "tests").parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from rapid_core.models import TINY_ALIAS, ensure_tiny_model

    ensure_tiny_model()
    return TINY_ALIAS


@pytest.fixture
def api_client(tmp_path):
    """A TestClient on a fresh SQLite store, authorised with a new key of project "p"."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from store.db import make_engine, make_sessionmaker
    from store.migrate import upgrade
    from store.repos import Keys
    from store.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_dir=tmp_path / "broker",
        artifacts_dir=tmp_path / "artifacts",
        runs_dir=tmp_path / "runs",
    )
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings))() as s:
        _, secret = Keys(s).create("p")
        s.commit()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


@pytest.fixture(autouse=True)
def _fresh_core_settings():
    """Core settings are read once per process; a test that changes RAPID_* variables must not leave
    its reading behind for the next test."""
    yield
    core_settings.cache_clear()
