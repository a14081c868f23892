"""Fixtures of the fault-injection tests: a PostgreSQL and a Redis of their own, for the session."""

from __future__ import annotations

import pytest
from fault_kit import OwnPostgres, OwnRedis


@pytest.fixture(scope="session")
def own_postgres():
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def own_redis():
    server = OwnRedis()
    try:
        yield server
    finally:
        server.close()
