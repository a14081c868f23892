"""Real parts for the service tests: a fresh PostgreSQL database, a Redis key prefix, a live
uvicorn server, Celery worker processes and API keys made by the CLI. No mocks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("RAPID_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RAPID_TEST_REDIS", "redis://127.0.0.1:6379/0")
TERMINAL = ("succeeded", "failed", "cancelled")
GRADER = {"type": "numeric", "reference": "{{item.answer}}"}


def tiny_hyperparameters(**over) -> dict:
    """A job small enough for a 2-core CPU: a tiny random model, 4 samples a round, 2 steps a round."""
    return {
        "rounds": 3,
        "group_size": 2,
        "prompts_per_round": 2,
        "mini_batch_size": 2,
        "max_new_tokens": 6,
        "eval_problems": 3,
        "eval_k": 1,
        "gen_micro_batch": 8,
        "lora_r": 4,
        "batch_ratio_control": "fixed",
        # The tiny model scores 0 on every sample, so every group is all-equal; rapid's default would
        # then train no step, and these jobs are about steps, checkpoints and their records.
        "drop_zero_std": False,
        **over,
    }  # batch_ratio_control fixed: every round the same shape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_database():
    """A uniquely named database in the local PostgreSQL server, dropped afterwards."""
    name = f"rapid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_prefix():
    """A key prefix of this test session in the local Redis; its keys are deleted afterwards."""
    prefix = f"rapid-test-{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


@dataclass
class Service:
    """One service deployment under test: its environment, API server and workers."""

    env: dict[str, str]
    workdir: Path
    port: int = 0
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def _log(self, name: str):
        return (self.workdir / f"{name}.log").open("ab")

    def start_api(self, *cmd: str, wrap: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        """The API server (uvicorn unless ``cmd`` says otherwise); ``wrap`` prefixes its command (a command
        that ends by exec'ing its arguments, so the API keeps its pid: to run it on a small disk, say),
        ``env`` overrides variables."""
        self.port = free_port()
        command = cmd or ("-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(self.port))
        command = [c.replace("{port}", str(self.port)) for c in command]
        self.api = subprocess.Popen(
            [*wrap, sys.executable, *command],
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            stdout=self._log("api"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: _healthy(self.base_url), 120, "the API to answer /healthz", self)

    def start_worker(self, wrap: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> subprocess.Popen:
        """A worker process, returned once it consumes its queues; ``extra`` are Celery worker options."""
        log = self.workdir / f"worker-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "worker", *extra],
            cwd=self.workdir,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        wait_until(lambda: " ready." in log.read_text(errors="replace"), 120, f"{log.name} to be ready", self)
        return proc

    def create_key(self, project: str) -> str:
        return self.run("-m", "api.cli", "keys", "create", "--project", project).stdout.strip()

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url=f"{self.base_url}/v1", max_retries=0, timeout=60)

    def http(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.workdir.glob("*.log")
        )

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.api]:
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def service_env(workdir: Path, **settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAPID_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    for cache in ("RAPID_CACHE_DIR",):  # the tiny model is built once and shared
        if cache in os.environ:
            env[cache] = os.environ[cache]
    env.update({f"RAPID_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check, timeout: float, what: str, service: Service | None = None, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}\n{service.logs() if service else ''}"
    )


def wait_for_job(client: openai.OpenAI, job_id: str, service: Service, timeout: float = 300):
    def done():
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in TERMINAL else None

    return wait_until(done, timeout, f"job {job_id} to finish", service, every=1.0)


def arithmetic_jsonl(path: Path, n: int = 40) -> Path:
    from rapid_core.config import make_config
    from rapid_core.tasks import arithmetic_task

    data = arithmetic_task(make_config(task_options={"n_train": n, "n_eval": 8}))
    path.write_text("".join(json.dumps(r) + "\n" for r in data.train))
    return path


def create_tiny_job(client: openai.OpenAI, file_id: str, **hyper):
    return client.fine_tuning.jobs.create(
        model="tiny-random",
        training_file=file_id,
        seed=1,
        method={
            "type": "reinforcement",
            "reinforcement": {"grader": GRADER, "hyperparameters": tiny_hyperparameters(**hyper)},
        },
    )
