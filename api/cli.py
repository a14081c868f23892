"""``rapid serve`` and ``rapid keys``: entry points the ``rapid`` CLI dispatches to.

``serve_main`` upgrades the database, starts a supervised worker subprocess (restarted if it dies)
and runs uvicorn in this process. With no environment it is the embedded setup (SQLite and a
filesystem broker under RAPID_DATA_DIR, default ./rapid-data); RAPID_DATABASE_URL / DATABASE_URL and
RAPID_BROKER_URL / REDIS_URL point it at PostgreSQL and Redis instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time

from sqlalchemy.orm import Session

from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.repos import Keys
from store.settings import get_settings

log = logging.getLogger("rapid.serve")
KEEP_ALIVE_S = 75


class WorkerSupervisor:
    """Keeps ``python -m worker`` running beside the API; a dead worker is replaced."""

    def __init__(self, extra_args: list[str]):
        self.cmd = [sys.executable, "-m", "worker", *extra_args]
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.proc = subprocess.Popen(self.cmd)
            code = self.proc.wait()
            if not self._stopping.is_set():
                log.warning("worker exited with %s; starting a new one", code)
                self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def serve_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rapid serve", description="Run the fine-tuning API and a worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())

    import uvicorn

    from api.app import create_app

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    supervisor = None if args.no_worker else WorkerSupervisor([])
    if supervisor:
        supervisor.start()
    app = create_app(settings)
    if supervisor:
        _stop_with_app(app, supervisor)
    # Keep idle connections longer than clients do (httpx, hence openai, drops them after 5 s): with
    # both at 5 s, a client reusing a connection as the server closes it gets a reset (bench/api_load.py).
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=KEEP_ALIVE_S
    )
    return 0


def _stop_with_app(app, supervisor: WorkerSupervisor) -> None:
    """Stop the worker in the app's shutdown: uvicorn re-raises SIGTERM after it, so no finally runs."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            yield state
        supervisor.stop()

    app.router.lifespan_context = lifespan


def keys_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rapid keys", description="Manage API keys (stored as SHA-256 hashes)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="Create an API key for a project (created if new); prints the key")
    create.add_argument("--project", required=True, help="Project name")
    listing = sub.add_parser("list", help="List keys: id, project, prefix, created, revoked (never the key)")
    listing.add_argument("--project", help="Only this project's keys")
    listing.add_argument("--json", action="store_true", help="One JSON object per line instead of a table")
    revoke = sub.add_parser(
        "revoke", help="Revoke keys by id (see 'list'); they fail from the next request on"
    )
    revoke.add_argument("key_ids", nargs="+", metavar="KEY_ID")
    args = parser.parse_args(argv)

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings))() as s:
        return {"create": _create_key, "list": _list_keys, "revoke": _revoke_keys}[args.command](s, args)


def _create_key(s: Session, args: argparse.Namespace) -> int:
    key, secret = Keys(s).create(args.project)
    s.commit()
    print(secret)
    print(
        f"created key {key.id} for project {args.project!r}; store it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


def _list_keys(s: Session, args: argparse.Namespace) -> int:
    rows = [
        {
            "id": k.id,
            "project": name,
            "prefix": k.prefix,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k, name in Keys(s).all(args.project)
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'ID':<30} {'PROJECT':<24} {'PREFIX':<14} {'CREATED (UTC)':<20} REVOKED (UTC)")
    for r in rows:
        created, revoked = _when(r["created_at"]), _when(r["revoked_at"]) if r["revoked_at"] else "-"
        print(f"{r['id']:<30} {r['project']:<24} {r['prefix'] + '...':<14} {created:<20} {revoked}")
    return 0


def _revoke_keys(s: Session, args: argparse.Namespace) -> int:
    missing = []
    for key_id in args.key_ids:
        key = Keys(s).revoke(key_id)
        if key is None:
            missing.append(key_id)
        else:
            print(f"revoked {key.id} (prefix {key.prefix}...) at {_when(key.revoked_at)}")
    s.commit()
    for key_id in missing:
        print(f"rapid keys revoke: no key with id {key_id!r} ('rapid keys list' shows them)", file=sys.stderr)
    return 1 if missing else 0


def _when(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["serve"]
    sys.exit({"serve": serve_main, "keys": keys_main}[command](rest))
