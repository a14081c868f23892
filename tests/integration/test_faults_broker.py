"""Broker faults, on a Redis this suite owns: a restart that loses a queued job's message, a frozen
Redis while jobs are created, and an API that dies after its commit and before its publish."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from fault_kit import assert_records_once, timed
from service_harness import arithmetic_jsonl, wait_until

from store.broker import jobs_in_broker, make_celery
from store.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]
STEPS = 2  # tiny_hyperparameters: 4 samples a round, mini-batches of 2


@pytest.fixture
def training_file(stack, tmp_path) -> str:
    return stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))


def test_redis_restart_loses_no_queued_job(stack, own_redis, training_file, tmp_path):
    stack.service.start_worker()
    running = stack.create(training_file, rounds=6, eval_problems=0)["id"]
    stack.wait(running, ("running",), 240)
    queued = stack.create(training_file)["id"]  # one worker, one job at a time: this one waits
    wait_until(
        lambda: (
            queued
            in jobs_in_broker(
                make_celery(Settings(broker_url=own_redis.url, broker_key_prefix=f"{stack.database}:"))
            )
        ),
        30,
        "the queued job's message",
        stack.service,
    )
    assert stack.job(queued)["status"] == "queued"

    own_redis.restart()  # no persistence: the waiting message is gone
    recovery = timed(
        lambda: any("lost by the broker" in m for m in stack.events(queued)),
        120,
        "the sweep to republish the lost job",
        stack.service,
    )
    assert stack.wait(running)["status"] == "succeeded", stack.service.logs()
    assert stack.wait(queued)["status"] == "succeeded", stack.service.logs()
    artifacts = tmp_path / "artifacts"
    assert_records_once(stack.database_url, running, artifacts, rounds=6, steps_per_round=STEPS, final=True)
    rec = assert_records_once(
        stack.database_url, queued, artifacts, rounds=3, steps_per_round=STEPS, final=True
    )
    assert sum(m.startswith("Job running on worker") for m in rec["events"]) == 1
    print(f"\n[fault] redis restart, queued job behind a running one: republished after {recovery:.1f} s")


def test_frozen_redis_answers_job_creation_at_once_and_delivers_the_job_later(
    stack, own_redis, training_file
):
    stack.service.start_worker()
    own_redis.freeze()
    try:
        started = time.monotonic()
        job = stack.create(training_file, key="frozen-1")
        answered = time.monotonic() - started
        with httpx.Client(base_url=stack.service.base_url, timeout=30) as http:
            ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
        assert int(ready.headers["Retry-After"]) > 0
    finally:
        own_redis.thaw()
    assert job["status"] == "queued" and answered < 3.0, answered
    delivered = timed(
        lambda: stack.job(job["id"])["status"] != "queued", 120, "the job to be delivered", stack.service
    )
    assert stack.wait(job["id"])["status"] == "succeeded", stack.service.logs()
    print(
        f"\n[fault] redis frozen at job creation: answered in {answered:.2f} s, delivered {delivered:.1f} s after thaw"
    )


def test_job_committed_by_an_api_that_dies_before_publishing_is_delivered_once(
    stack, training_file, tmp_path
):
    """The API commits the job and its outbox row, then cannot publish (its broker address answers
    nothing) and is killed: the state a crash between commit and publish leaves. The client, which
    never got an answer it trusts, retries with its idempotency key against the restarted API."""
    service = stack.service
    os.killpg(service.api.pid, signal.SIGTERM)
    service.api.wait(30)
    service.start_api(env={"RAPID_BROKER_URL": "redis://127.0.0.1:9/0"})  # port 9 (discard): refused
    job = stack.create(training_file, key="retry-me")
    assert job["status"] == "queued"
    os.killpg(service.api.pid, signal.SIGKILL)
    service.api.wait(30)

    service.start_api()
    service.start_worker()
    again = stack.create(training_file, key="retry-me")
    assert again["id"] == job["id"]  # the retry is the same job, not a second one
    delivered = timed(
        lambda: stack.job(job["id"])["status"] != "queued", 120, "the outbox to deliver the job", service
    )
    assert stack.wait(job["id"])["status"] == "succeeded", service.logs()
    with stack.http() as http:
        assert [j["id"] for j in http.get("/v1/fine_tuning/jobs").json()["data"]] == [job["id"]]
    rec = assert_records_once(
        stack.database_url, job["id"], tmp_path / "artifacts", rounds=3, steps_per_round=STEPS, final=True
    )
    assert sum(m.startswith("Job running on worker") for m in rec["events"]) == 1
    print(
        f"\n[fault] API killed between commit and publish: delivered {delivered:.1f} s after a worker was up"
    )
