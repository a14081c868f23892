"""Alembic upgrades and downgrades the store on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from service_harness import postgres_database
from sqlalchemy import create_engine, inspect, text

from store.migrate import downgrade, upgrade
from store.models import Base

pytestmark = pytest.mark.integration


def columns(url: str) -> dict[str, set[str]]:
    """Each table's column names, as the database has them."""
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {
            table: {c["name"] for c in found.get_columns(table)}
            for table in found.get_table_names()
            if table != "alembic_version"
        }
    finally:
        engine.dispose()


MODELS = {name: {c.name for c in table.columns} for name, table in Base.metadata.tables.items()}


def check_round_trip(url: str) -> None:
    upgrade(url)
    assert columns(url) == MODELS  # the migrations build what the models declare
    downgrade(url, "base")
    assert columns(url) == {}
    upgrade(url)  # and again, from empty
    assert columns(url) == MODELS


def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path):
    check_round_trip(f"sqlite:///{tmp_path / 'store.db'}")


def test_migrations_upgrade_and_downgrade_on_postgresql():
    with postgres_database() as url:
        check_round_trip(url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_keys_made_before_created_ns_keep_their_order(backend, tmp_path):
    def check(url: str) -> None:
        upgrade(url, "0003_preflights")
        engine = create_engine(url)
        try:
            with engine.begin() as c:
                c.execute(text("INSERT INTO projects (id, name, created_at) VALUES ('proj-a', 'a', 100)"))
                for key_id, created in (("key-late", 200), ("key-early", 150)):
                    c.execute(
                        text(
                            "INSERT INTO api_keys (id, project_id, key_hash, prefix, created_at)"
                            " VALUES (:id, 'proj-a', :hash, 'rk-x', :at)"
                        ),
                        {"id": key_id, "hash": key_id, "at": created},
                    )
            upgrade(url)
            with engine.connect() as c:
                rows = c.execute(text("SELECT id, created_ns FROM api_keys ORDER BY created_ns")).all()
        finally:
            engine.dispose()
        assert [tuple(r) for r in rows] == [("key-early", 150 * 10**9), ("key-late", 200 * 10**9)]

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        with postgres_database() as url:
            check(url)
