"""The one typed settings object of a service process (API or worker), read from ``RAPID_*``.

Defaults are the embedded setup: SQLite and a filesystem broker under ``./rapid-data``, so
``rapid serve`` needs no server. ``DATABASE_URL`` and ``REDIS_URL`` are honoured as aliases.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path("rapid-data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAPID_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        f"sqlite:///{DATA_DIR / 'rapid.db'}",
        validation_alias=AliasChoices("RAPID_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; postgresql:// is read as postgresql+psycopg://",
    )
    broker_url: str = Field(
        "filesystem://",
        validation_alias=AliasChoices("RAPID_BROKER_URL", "REDIS_URL"),
        description="Celery broker; filesystem:// keeps messages in broker_dir (no server)",
    )
    broker_dir: Path = Field(DATA_DIR / "broker", description="Folder of the filesystem broker")
    broker_key_prefix: str = Field("", description="Prefix of every Redis key the broker writes")
    broker_visibility_timeout: int = Field(
        3600, ge=1, description="Seconds before Redis redelivers an unacknowledged job message"
    )
    artifacts_dir: Path = Field(DATA_DIR / "artifacts", description="Uploaded files and adapter archives")
    runs_dir: Path = Field(
        DATA_DIR / "runs", description="Jobs' working directories; shared by every worker that may resume"
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
    db_retry_seconds: float = Field(
        90.0, ge=0, description="How long a worker retries the database through an outage before the job fails"
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Largest upload")
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
            (self.broker_dir / "queue").mkdir(parents=True, exist_ok=True)
            (self.broker_dir / "processed").mkdir(parents=True, exist_ok=True)
        if self.is_sqlite and ":///" in self.database_url:
            Path(self.database_url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
