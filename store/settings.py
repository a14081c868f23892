"""The one typed settings object of a service process (API or worker), read from ``RAPID_*``.

Defaults are the embedded setup: SQLite, a filesystem broker, uploaded files and job directories,
all under the data directory (``RAPID_DATA_DIR``, default ``./rapid-data``), so ``rapid serve``
needs no server. ``DATABASE_URL`` and ``REDIS_URL`` are honoured as aliases. ``get_settings`` is
the one way a process reads them: once, after checking that every ``RAPID_*`` variable is known.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rapid_core.settings import CoreSettings, check_environment, env_names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPID_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path("rapid-data"), description="Where every default path below lives")
    database_url: str = Field(
        default_factory=lambda v: f"sqlite:///{v['data_dir'] / 'rapid.db'}",
        validation_alias=AliasChoices("RAPID_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL (default: SQLite in the data directory); postgresql:// is read as "
        "postgresql+psycopg://",
    )
    broker_url: str = Field(
        "filesystem://",
        validation_alias=AliasChoices("RAPID_BROKER_URL", "REDIS_URL"),
        description="Celery broker; filesystem:// keeps messages in broker_dir (no server)",
    )
    broker_dir: Path = Field(
        default_factory=lambda v: v["data_dir"] / "broker",
        description="Folder of the filesystem broker: queue/, processed/ and control/ (its exchange table)",
    )
    broker_key_prefix: str = Field("", description="Prefix of every Redis key the broker writes")
    broker_visibility_timeout: int = Field(
        3600, ge=1, description="Seconds before Redis redelivers an unacknowledged job message"
    )
    artifacts_dir: Path = Field(
        default_factory=lambda v: v["data_dir"] / "artifacts",
        description="Uploaded files and adapter archives",
    )
    runs_dir: Path = Field(
        default_factory=lambda v: v["data_dir"] / "runs",
        description="Jobs' working directories; shared by every worker that may resume",
    )
    default_queue: str = Field("cpu", description="Queue of jobs whose device is auto (cpu or cuda)")
    worker_queues: str = Field("", description="Queues a worker consumes; empty = cpu, plus cuda if present")
    lease_seconds: float = Field(60.0, gt=0, description="A job's lease; a worker renews it 4x as often")
    broker_timeout: float = Field(
        3.0, gt=0, description="Seconds a publish or a broker check may take before it counts as failed"
    )
    sweep_seconds: float = Field(
        10.0, gt=0, description="How often each worker requeues orphaned jobs and publishes undelivered ones"
    )
    preflight_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="How long past its timeout_s an unfinished pre-flight may still report before it fails",
    )
    db_retry_seconds: float = Field(
        90.0,
        ge=0,
        description="How long a worker retries the database through an outage before the job fails",
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Largest upload")
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1,
        description="Largest body of any other request (JSON); cut while it streams in",
    )
    grader_runs_per_project: int = Field(
        4,
        ge=1,
        description="Grader runs (/graders/run) one project may have going in one API process; more get 429",
    )
    grader_runs_total: int = Field(
        16, ge=1, description="Grader runs one API process works on at once; more wait"
    )
    metrics_token: str = Field("", description="When set, /metrics needs 'Authorization: Bearer <token>'")
    max_file_lines: int = Field(1_000_000, ge=1, description="Most JSONL lines in one upload")

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for d in (self.artifacts_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.broker_url.startswith("filesystem"):
            for sub in ("queue", "processed", "control"):
                (self.broker_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.is_sqlite and ":///" in self.database_url:
            Path(self.database_url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. A ``RAPID_*`` variable that neither these nor the core's
    settings read is a ConfigError naming the nearest known name (a typo must not be ignored)."""
    check_environment(env_names(Settings) | env_names(CoreSettings))
    return Settings()
