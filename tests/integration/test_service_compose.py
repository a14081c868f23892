"""The compose file is valid: ``docker compose config`` resolves it (no Docker engine is needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from service_harness import ROOT

pytestmark = pytest.mark.integration
COMPOSE = ROOT / "docker" / "compose.yaml"


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):  # the v1 client (Debian's docker-compose package) reads the same file
        return ["docker-compose"]
    return None


def test_compose_file_resolves_with_postgres_redis_api_and_gpu_worker():
    command = compose_command()
    assert command is not None, (
        "neither docker compose nor docker-compose is installed (scripts/setup.sh adds it)"
    )
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"postgres", "redis", "api", "gpu-worker"}
    worker = config["services"]["gpu-worker"]
    assert worker["environment"]["RAPID_WORKER_QUEUES"] == "cuda"
    assert worker["environment"]["RAPID_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("Dockerfile.api", "Dockerfile.worker"):
        assert (ROOT / "docker" / name).is_file()
