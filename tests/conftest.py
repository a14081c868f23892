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


@pytest.fixture
def api_client(tmp_path):
    """A TestClient on a fresh SQLite store, authorised with a new key of project "p"."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from store.db import make_engine, make_sessionmaker
    from store.migrate import upgrade
    from store.repos import Keys
    from store.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", broker_dir=tmp_path / "broker",
                        artifacts_dir=tmp_path / "artifacts", runs_dir=tmp_path / "runs")  # fmt: skip
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings))() as s:
        _, secret = Keys(s).create("p")
        s.commit()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client
