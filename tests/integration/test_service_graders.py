"""Graders through the live service (embedded defaults: SQLite, filesystem broker, one worker):
a code_tests job on real MBPP rows succeeds with its grader counts in the round metrics; a grader
that fails on some samples leaves a warning event; one that fails on most fails the job, keeping
what it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_harness import Service, service_env, tiny_hyperparameters, wait_for_job

from tests.conftest import DATASETS

pytestmark = pytest.mark.integration
MBPP = DATASETS / "mbpp" / "mbpp.jsonl"
RAISES_ON_K1 = """
def grade(sample, item):
    if item["k"] == 1:
        raise RuntimeError("grader bug on k=1")
    return 0.0
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("graders")
    service = Service(service_env(work), work)
    try:
        service.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def key(service):
    return service.create_key("graders")


@pytest.fixture(scope="module")
def client(service, key):
    return service.client(key)


def metrics(service, key, job_id: str, kind: str) -> list[dict]:
    response = service.http(key).get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"kind": kind})
    return response.raise_for_status().json()["data"]


def upload(client, path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


def start_job(client, grader: dict, training: str, validation: str, **hyper):
    hyperparameters = tiny_hyperparameters(**{"rounds": 1, "max_new_tokens": 16, "eval_problems": 2, **hyper})
    return client.fine_tuning.jobs.create(
        model="tiny-random",
        training_file=training,
        validation_file=validation,
        seed=1,
        method={
            "type": "reinforcement",
            "reinforcement": {"grader": grader, "hyperparameters": hyperparameters},
        },
    )


def rows_with_k(*ks: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Say {k}."}], "k": k} for k in ks]


def messages_of(client, job_id: str) -> list:
    return client.fine_tuning.jobs.list_events(job_id, limit=100).data


def test_code_tests_job_on_mbpp_rows_succeeds_with_grader_counts(service, key, client, tmp_path):
    assert MBPP.is_file(), f"{MBPP} is missing (set RAPID_DATASETS_DIR)"
    from rapid_core.datasets import DATASETS as ADAPTERS
    from rapid_core.datasets import load_dataset

    training = upload(client, tmp_path / "train.jsonl", load_dataset("mbpp", "test", str(MBPP), limit=4))
    validation = upload(
        client, tmp_path / "val.jsonl", load_dataset("mbpp", "validation", str(MBPP), limit=2)
    )
    grader = ADAPTERS.get("mbpp").grader
    assert grader == {"type": "code_tests", "style": "mbpp", "timeout": 20.0}
    job = wait_for_job(client, start_job(client, grader, training, validation, rounds=2).id, service)
    assert job.status == "succeeded", (job.error, service.logs())

    rounds = metrics(service, key, job.id, "round")
    assert len(rounds) == 2
    for m in rounds:
        counts = m["metrics"]["grader_status"]
        assert set(counts) == {"ok", "wrong", "timeout", "error", "sandbox_failure"}
        assert sum(counts.values()) == 4  # prompts_per_round 2 x group_size 2
        assert counts["sandbox_failure"] == 0 and counts["timeout"] == 0  # the sandbox ran every program
        assert set(m["metrics"]["grader_latency_s"]) >= {"p50", "p90", "p99"}


def test_a_grader_failing_on_some_samples_leaves_a_warning_event(service, client, tmp_path):
    training = upload(client, tmp_path / "train.jsonl", rows_with_k(0, 1))
    validation = upload(client, tmp_path / "val.jsonl", rows_with_k(0, 0))
    grader = {"type": "python", "source": RAISES_ON_K1}
    job = wait_for_job(client, start_job(client, grader, training, validation).id, service)
    assert job.status == "succeeded", (job.error, service.logs())  # half failed: not most

    warnings = [e for e in messages_of(client, job.id) if e.level == "warn"]
    assert len(warnings) == 1, [e.message for e in messages_of(client, job.id)]
    event = warnings[0]
    assert "the grader failed on 2 of 4 samples (error 2)" in event.message and "p99" in event.message
    assert event.data["grader_status"]["error"] == 2
    assert set(event.data["grader_latency_s"]) == {"p50", "p90", "p99"}


def test_a_grader_failing_on_most_samples_fails_the_job_and_keeps_its_records(service, key, client, tmp_path):
    training = upload(client, tmp_path / "train.jsonl", rows_with_k(1, 1))
    validation = upload(client, tmp_path / "val.jsonl", rows_with_k(0, 0))
    grader = {"type": "python", "source": RAISES_ON_K1}
    job = wait_for_job(client, start_job(client, grader, training, validation).id, service)

    assert job.status == "failed", service.logs()
    assert "the grader failed on 4 of 4 samples (error=4)" in job.error.message
    assert "grader bug on k=1" in job.error.message  # the first failure, so the user can fix it
    events = [e.message for e in messages_of(client, job.id)]
    assert any(m.startswith("Job failed: GraderError") for m in events) and "Training started" in events
    evals = metrics(service, key, job.id, "eval")
    assert [m["phase"] for m in evals] == ["before"]  # recorded before the failing round, and kept
