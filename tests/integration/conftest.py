"""Fixtures of the fault-injection tests: a PostgreSQL and a Redis of their own for the session, and a
service stack (API, workers) on them for one test."""

from __future__ import annotations

import pytest
from fault_kit import OwnPostgres, OwnRedis, make_stack


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


@pytest.fixture
def stack(own_postgres, own_redis, tmp_path):
    stack = make_stack(own_postgres, own_redis, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()
