"""What the fault-injection tests need. Servers they own, on spare ports, so they can stop, freeze and
restart them without touching the shared PostgreSQL (5432) and Redis (6379): a PostgreSQL cluster made
by initdb in a temporary directory and a redis-server without persistence. A small tmpfs for a full
disk. A service deployment on them, and the check that a job's records exist exactly once."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
from service_harness import (
    GRADER,
    TERMINAL,
    Service,
    free_port,
    service_env,
    tiny_hyperparameters,
    wait_until,
)
from sqlalchemy import create_engine, select

from store.migrate import upgrade
from store.models import Checkpoint, Event, Job, Metric

PG_USER = "postgres"  # the server refuses to run as root; a root test runs it as this user


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found[-1]


class OwnPostgres:
    """A throwaway PostgreSQL cluster: ``initdb`` + ``pg_ctl``, independent of pg_ctlcluster."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="rapid-faults-pg-"))
        self.data, self.port = self.root / "data", free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", PG_USER, "--"]
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True)

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def terminate_connections(self, database: str) -> int:
        """Reset every connection to ``database``, as a failover or a pooler restart does."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return len(rows)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server without persistence: a restart loses every message, as in the issue."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="rapid-faults-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
        ]
        self.proc = subprocess.Popen(cmd, stdout=(self.root / "log").open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._pings, 30, "redis-server to answer")

    def _pings(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.terminate()  # no save configured: its data is gone
        self.proc.wait(30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)  # the port accepts connections that never answer

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.thaw()
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def small_disk(path: Path, size: str) -> list[str]:
    """A command prefix that runs a process with a ``size`` tmpfs mounted at ``path``, in its own
    user and mount namespaces: it needs no root, and the mount vanishes with the process."""
    path.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o size={size} tmpfs "{path}" && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]


def seen_by(pid: int, path: Path) -> Path:
    """``path`` as process ``pid`` sees it (inside its mount namespace)."""
    return Path(f"/proc/{pid}/root") / path.relative_to("/")


def timed(check, timeout: float, what: str, service=None, every: float = 0.2) -> float:
    """Seconds until ``check`` holds (an AssertionError naming ``what`` after ``timeout``)."""
    start = time.monotonic()
    wait_until(check, timeout, what, service, every)
    return time.monotonic() - start


@dataclass
class Stack:
    """A deployment on the own servers: its database, broker prefix and processes."""

    service: Service
    database: str
    database_url: str
    key: str

    def http(self) -> httpx.Client:
        return self.service.http(self.key)

    def job(self, job_id: str) -> dict:
        with self.http() as http:
            return http.get(f"/v1/fine_tuning/jobs/{job_id}").json()

    def upload(self, path: Path) -> str:
        with self.http() as http, path.open("rb") as f:
            response = http.post(
                "/v1/files", files={"file": ("train.jsonl", f)}, data={"purpose": "fine-tune"}
            )
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def create(self, file_id: str, key: str | None = None, **hyper) -> dict:
        body = {
            "model": "tiny-random",
            "training_file": file_id,
            "seed": 1,
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": GRADER, "hyperparameters": tiny_hyperparameters(**hyper)},
            },
        }
        with self.http() as http:
            response = http.post(
                "/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": key} if key else {}
            )
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, statuses=TERMINAL, timeout: float = 300) -> dict:
        return wait_until(
            lambda: (j := self.job(job_id))["status"] in statuses and j,
            timeout,
            f"job {job_id} to be {'/'.join(statuses)}",
            self.service,
            every=0.5,
        )

    def events(self, job_id: str) -> list[str]:
        return records(self.database_url, job_id)["events"]

    def stop(self) -> None:
        self.service.stop()


def make_stack(
    pg: OwnPostgres, broker: OwnRedis, workdir: Path, api_wrap: tuple[str, ...] = (), **settings
) -> Stack:
    """A migrated database, the API and a key; the caller starts the workers it wants. Short leases and
    sweeps, so that recovery shows within seconds."""
    database = f"faults_{uuid.uuid4().hex[:10]}"
    url = pg.create_database(database)
    upgrade(url)
    values = dict(
        database_url=url,
        broker_url=broker.url,
        broker_key_prefix=f"{database}:",
        artifacts_dir=workdir / "artifacts",
        runs_dir=workdir / "runs",
        lease_seconds=6,
        sweep_seconds=1,
        broker_timeout=2,
        db_retry_seconds=60,
    )
    service = Service(service_env(workdir, **{**values, **settings}), workdir)
    service.start_api(wrap=api_wrap)
    return Stack(service, database, url, service.create_key("faults"))


def records(database_url: str, job_id: str) -> dict:
    """A job's row, events, step / round / eval metrics and checkpoints, straight from the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            return {
                "job": c.execute(select(Job).where(Job.id == job_id)).mappings().one(),
                "events": list(
                    c.scalars(select(Event.message).where(Event.job_id == job_id).order_by(Event.seq))
                ),
                "steps": list(
                    c.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.kind == "step"))
                ),
                "rounds": list(
                    c.scalars(select(Metric.round).where(Metric.job_id == job_id, Metric.kind == "round"))
                ),
                "evals": list(
                    c.scalars(select(Metric.phase).where(Metric.job_id == job_id, Metric.kind == "eval"))
                ),
                "checkpoints": [
                    tuple(r)
                    for r in c.execute(
                        select(Checkpoint.round, Checkpoint.final, Checkpoint.storage_key).where(
                            Checkpoint.job_id == job_id
                        )
                    )
                ],
            }
    finally:
        engine.dispose()


def assert_records_once(
    database_url: str, job_id: str, artifacts: Path, *, rounds: int | None, steps_per_round: int, final: bool
) -> dict:
    """Every round's step, round and checkpoint rows exist exactly once, with no gap: all ``rounds`` of
    them, or those of the rounds done when None (a stopped job). Each checkpoint row has its archive;
    there is one final checkpoint iff ``final``; no half-written ``.part`` file is left."""
    rec = records(database_url, job_id)
    done = len(rec["rounds"]) if rounds is None else rounds
    assert sorted(rec["rounds"]) == list(range(done)), rec["rounds"]
    steps = sorted(rec["steps"])
    assert steps == list(range(1, len(steps) + 1)), steps
    # A stopped job may have recorded all of its next round's steps and then lost the database before
    # that round's own row: up to one whole round of steps past the last round row, never more.
    assert done * steps_per_round <= len(steps) <= (done + 1) * steps_per_round, (done, steps)
    if rounds is not None:
        assert len(steps) == rounds * steps_per_round, steps
    ckpts = sorted(r for r, is_final, _ in rec["checkpoints"] if not is_final)
    assert ckpts in (list(range(1, done + 1)), list(range(1, done)) if rounds is None else None), ckpts
    assert sum(is_final for _, is_final, _ in rec["checkpoints"]) == int(final), rec["checkpoints"]
    for _, _, key in rec["checkpoints"]:
        assert (artifacts / key).is_file(), key
    assert not list(artifacts.rglob("*.part"))
    assert sorted(rec["evals"]) == sorted(set(rec["evals"])), rec["evals"]
    return rec
