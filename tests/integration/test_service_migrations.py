"""Alembic upgrades and downgrades the store on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from service_harness import postgres_database
from sqlalchemy import create_engine, inspect

from store.migrate import downgrade, upgrade
from store.models import Base

pytestmark = pytest.mark.integration


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def check_round_trip(url: str) -> None:
    upgrade(url)
    assert tables(url) == set(Base.metadata.tables)
    downgrade(url, "base")
    assert tables(url) == set()
    upgrade(url)  # and again, from empty
    assert tables(url) == set(Base.metadata.tables)


def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path):
    check_round_trip(f"sqlite:///{tmp_path / 'store.db'}")


def test_migrations_upgrade_and_downgrade_on_postgresql():
    with postgres_database() as url:
        check_round_trip(url)
