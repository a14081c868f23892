"""The core's settings: one object per process, read once from ``RAPID_*`` environment variables.

Where benchmark files, the model cache, the sandbox's interpreter and Lean live. The service's own
settings (database, broker, data directory) are in ``store.settings``; a process checks its whole
environment against both with ``check_environment``, so a misspelt ``RAPID_*`` name is a startup
error naming the nearest known one instead of a setting silently ignored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rapid_core.errors import ConfigError

PREFIX = "RAPID_"
# Variables of the test suite (its PostgreSQL and Redis, secrets planted by sandbox tests): not settings.
TEST_PREFIX = "RAPID_TEST_"
# Read by the `rapid jobs` / `rapid files` client (rapid_client), which a user often runs from the
# same shell as `rapid serve`: known everywhere, so neither side refuses the other's variables.
CLIENT_VARIABLES = frozenset({"RAPID_API_KEY", "RAPID_BASE_URL"})
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore")

    datasets_dir: Path = Field(SHARED_DATASETS, description="Benchmark files (gsm8k/, mbpp/, ...)")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "rapid", description="Built models: tiny-random, dequantized GGUF files"
    )
    sandbox_workers: int = Field(
        0, ge=0, description="Programs the default sandbox pool runs at once (0 = 2 x cores)"
    )
    sandbox_per_owner: int = Field(
        0, ge=0, description="Sandbox runs one owner (a project) may have going at once (0 = half the pool)"
    )
    sandbox_python: str | None = Field(
        None, description="Interpreter of sandboxed programs (default: this one)"
    )
    sandbox_bind: str = Field(
        "", description="Colon-separated directories mounted read-only into the sandbox"
    )
    sandbox_backend: str | None = Field(None, description="Force a sandbox backend: bwrap or unshare")
    lean_project: str | None = Field(None, description="Lean project with Mathlib, for the lean grader")


@lru_cache
def core_settings() -> CoreSettings:
    """The process's core settings, read from the environment on first use."""
    return CoreSettings()


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: its prefixed field names and aliases."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {a for a in alias.choices if isinstance(a, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def check_environment(known: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError for the first ``RAPID_*`` variable that no settings class reads."""
    known = set(known) | CLIENT_VARIABLES
    env = os.environ if environ is None else environ
    for name in sorted(env):
        if name.startswith(PREFIX) and not name.startswith(TEST_PREFIX) and name not in known:
            nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0)
            hint = f"; did you mean {nearest[0]}?" if nearest else ""
            raise ConfigError(f"unknown environment variable{hint}", name)
