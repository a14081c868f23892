"""Property-based fuzzing of the live API (schemathesis, from our OpenAPI schema) for a bounded time.

A real ``rapid serve`` on the embedded defaults (SQLite, filesystem broker), an API key from the
CLI, and real objects to aim at (a file, a job, a checkpoint with its archive), whose ids the
fuzzer draws most of the time and mutates otherwise. The run fails on any 5xx and on any response
that breaks the schema (status code, content type, body, headers, 405 without Allow, auth ignored).
Not checked: whether the server is stricter than the schema (grader objects are open objects in
the schema and validated by the service, so "schema-valid request rejected" is expected there).
``RAPID_FUZZ_SECONDS`` sets the budget (default 150).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import httpx
import pytest
from service_harness import Service, service_env

pytestmark = pytest.mark.integration
SECONDS = int(os.environ.get("RAPID_FUZZ_SECONDS", "150"))
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "response_headers_conformance,unsupported_method,ignored_auth"
)
ROW = {"messages": [{"role": "user", "content": "Sentiment of 'great'?"}], "label": "positive"}
GRADER = {
    "type": "string_check",
    "name": "g",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    service = Service(service_env(work), work)
    try:
        service.start_api("-m", "api.cli", "serve", "--no-worker", "--port", "{port}")
        yield service
    finally:
        service.stop()


def seed_objects(service: Service, key: str) -> dict[str, list[str]]:
    """A file, a job and a checkpoint (row and archive, as a worker writes them) to aim at."""
    http = service.http(key)
    upload = (
        http.post(
            "/v1/files",
            files={"file": ("t.jsonl", (json.dumps(ROW) + "\n").encode())},
            data={"purpose": "fine-tune"},
        )
        .raise_for_status()
        .json()
    )
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {"rounds": 1}}}
    job = (
        http.post(
            "/v1/fine_tuning/jobs",
            json={"model": "tiny-random", "training_file": upload["id"], "method": method},
        )
        .raise_for_status()
        .json()
    )
    from store.artifacts import LocalArtifacts
    from store.db import make_engine, make_sessionmaker
    from store.models import Checkpoint
    from store.settings import Settings

    data = service.workdir / "rapid-data"
    settings = Settings(database_url=f"sqlite:///{data / 'rapid.db'}", artifacts_dir=data / "artifacts")
    archive = service.workdir / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("adapter/adapter_config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    LocalArtifacts(settings.artifacts_dir).put_file(f"checkpoints/{job['id']}/1.tar.gz", archive)
    with make_sessionmaker(make_engine(settings))() as s:
        ckpt = Checkpoint(
            job_id=job["id"],
            round=1,
            step_number=2,
            name=f"{job['id']}:ckpt-step-2",
            metrics={"loss": 0.5},
            storage_key=f"checkpoints/{job['id']}/1.tar.gz",
        )
        s.add(ckpt)
        s.commit()
        return {"files": [upload["id"]], "jobs": [job["id"]], "checkpoints": [ckpt.id]}


def config(ids: dict[str, list[str]]) -> str:
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for param, name in (
        ("path.file_id", "files"),
        ("path.fine_tuning_job_id", "jobs"),
        ("path.checkpoint_id", "checkpoints"),
        ("body.training_file", "files"),
    ):
        lines.append(f'"{param}" = {{ dictionary = "{name}", probability = 0.8 }}')
    return "\n".join(lines) + "\n"


def requests_served(base_url: str) -> Counter[str]:
    """Requests the API has answered, by status code (from its own Prometheus counter)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    served: Counter[str] = Counter()
    for status, count in re.findall(r'^rapid_http_requests_total\{.*status="(\d+)".*\} (\S+)$', text, re.M):
        served[status] += int(float(count))
    return served


def test_fuzzing_the_live_api_finds_no_5xx_and_no_response_outside_the_schema(service, tmp_path):
    key = service.create_key("fuzz")
    ids = seed_objects(service, key)
    (tmp_path / "schemathesis.toml").write_text(config(ids))
    before = requests_served(service.base_url)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{service.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--max-time",
        str(SECONDS),
        "--workers",
        "1",
        "--report",
        "json",
        "--report-dir",
        str(tmp_path / "report"),
        "--request-timeout",
        "60",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 240)
    by_status = requests_served(service.base_url) - before
    served = sum(by_status.values())
    [report_path] = (tmp_path / "report").glob("*.json")
    report = json.loads(report_path.read_text())
    summary = (
        f"schemathesis: {report['test_cases']['generated']} test cases, {served} requests served "
        f"({dict(sorted(by_status.items()))}) in {report['running_time']:.0f}s, seed {report['seed']}"
    )
    print(summary)
    assert report["operations"]["tested"] == report["operations"]["total"], run.stdout[-3000:]
    assert report["failures"] == [] and report["errors"] == [], (
        f"{summary}\n{run.stdout[-20000:]}\n{service.logs()}"
    )
    assert run.returncode == 0, run.stdout[-5000:]
    assert served > 500, summary  # the budget was spent sending requests, not failing to start
