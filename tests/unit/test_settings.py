"""Settings: read once per process from RAPID_* variables; an unknown one is refused by name; every
default path of the service lives under the data directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rapid_core.errors import ConfigError
from rapid_core.settings import CoreSettings, check_environment, env_names
from store.settings import Settings
from tests.conftest import REPO

KNOWN = env_names(Settings) | env_names(CoreSettings)


def test_known_names_cover_both_settings_objects_and_the_aliases():
    assert {
        "RAPID_DATA_DIR",
        "RAPID_DATABASE_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "RAPID_DATASETS_DIR",
        "RAPID_CACHE_DIR",
        "RAPID_SANDBOX_BACKEND",
        "RAPID_LEAN_PROJECT",
    } <= KNOWN


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("RAPID_DATASET_DIR", "RAPID_DATASETS_DIR"),
        ("RAPID_DATADIR", "RAPID_DATA_DIR"),
        ("RAPID_BROKER", "RAPID_BROKER_URL"),
        ("RAPID_SANDBOX_BACKEN", "RAPID_SANDBOX_BACKEND"),
    ],
)
def test_an_unknown_rapid_variable_is_refused_naming_the_nearest_known_one(name, nearest):
    with pytest.raises(ConfigError) as err:
        check_environment(KNOWN, {name: "x", "PATH": "/usr/bin", "RAPID_DATA_DIR": "/tmp"})
    assert err.value.field == name and f"did you mean {nearest}?" in str(err.value)


def test_test_suite_variables_and_other_prefixes_are_not_settings():
    check_environment(KNOWN, {"RAPID_TEST_PG": "postgresql://", "RAPIDJSON": "1", "HOME": "/root"})


def test_every_default_path_lives_under_the_data_directory(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'rapid.db'}"
    assert {s.broker_dir, s.artifacts_dir, s.runs_dir} == {
        tmp_path / "data" / d for d in ("broker", "artifacts", "runs")
    }
    explicit = Settings(data_dir=tmp_path, runs_dir=tmp_path / "elsewhere", database_url="postgresql://h/db")
    assert (
        explicit.runs_dir == tmp_path / "elsewhere" and explicit.database_url == "postgresql+psycopg://h/db"
    )
    assert explicit.artifacts_dir == tmp_path / "artifacts"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAPID_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_the_data_directory_comes_from_the_environment_and_the_broker_writes_only_there(tmp_path):
    """RAPID_DATA_DIR moves everything, the filesystem broker's control folder (its exchange table,
    kombu's default ./control) included: nothing lands in the directory the service starts in."""
    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    code = (
        "from store.broker import enqueue_job, make_celery\n"
        "from store.settings import get_settings\n"
        "s = get_settings(); s.ensure_dirs(); enqueue_job(make_celery(s), 'ftjob-1', 'cpu')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=clean_env(RAPID_DATA_DIR=str(data)),
        check=True,
        timeout=120,
    )
    assert list(cwd.iterdir()) == []
    assert (data / "broker" / "control" / "cpu.exchange").is_file()
    assert len(list((data / "broker" / "queue").iterdir())) == 1


def test_a_worker_refuses_to_start_with_an_unknown_variable(tmp_path):
    env = clean_env(RAPID_DATA_DIR=str(tmp_path), RAPID_RUN_DIR=str(tmp_path))  # RAPID_RUNS_DIR, misspelt
    result = subprocess.run(
        [sys.executable, "-m", "worker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "RAPID_RUN_DIR" in result.stderr and "did you mean RAPID_RUNS_DIR?" in result.stderr
    assert not (tmp_path / "broker").exists()  # refused before anything was created


def test_the_clients_variables_are_known_to_the_server_and_the_cli():
    check_environment(KNOWN, {"RAPID_API_KEY": "sk-x", "RAPID_BASE_URL": "http://127.0.0.1:8000/v1"})
