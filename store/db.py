"""Engine, session factory and transactions. Sessions never commit on their own: the request or task
does, here through ``transact``, which also rides out a database outage for a bounded time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store.settings import Settings

log = logging.getLogger("rapid.store")
T = TypeVar("T")
CONNECT_TIMEOUT_S = 5  # a PostgreSQL that does not answer is down, not slow


class StoreUnavailable(Exception):
    """The database stayed unreachable for longer than the caller was willing to wait."""


def make_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        engine = create_engine(
            settings.database_url, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # WAL: the API reads while a worker writes
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        settings.database_url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_transient(err: BaseException) -> bool:
    """A dropped connection, a restarting or unreachable server, a locked SQLite file: worth a retry."""
    if isinstance(err, DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(err, OperationalError | InterfaceError)


def transact(sessions: sessionmaker[Session], work: Callable[[Session], T], *, retry_for: float = 0.0) -> T:
    """Run ``work`` in one transaction and commit it. Transient errors are retried with backoff for up
    to ``retry_for`` seconds (a failed transaction left nothing behind; the keyed writes of the
    repositories make a retry after a commit whose answer was lost harmless too), then raise
    ``StoreUnavailable``, whose message names no SQL."""
    deadline = time.monotonic() + retry_for
    delay = 0.2
    while True:
        try:
            with sessions() as s:
                result = work(s)
                s.commit()
                return result
        except DBAPIError as err:
            if not is_transient(err):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if retry_for <= 0:
                    raise
                raise StoreUnavailable(f"The database was unreachable for {retry_for:.0f} s") from err
            log.warning(
                "database unavailable (%s); retrying in %.1f s", type(err).__name__, min(delay, remaining)
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def ping(sessions: sessionmaker[Session]) -> bool:
    try:
        with sessions() as s:
            s.execute(text("SELECT 1"))
        return True
    except DBAPIError:
        return False
