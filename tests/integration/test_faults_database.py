"""Database faults, on a PostgreSQL this suite owns: connections reset mid-job (a failover, a pooler
restart), the server restarted mid-job, and an outage longer than the worker waits for."""

from __future__ import annotations

import time

import httpx
import pytest
from fault_kit import assert_records_once, make_stack, records, timed
from service_harness import arithmetic_jsonl, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]
STEPS = 2
SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "[SQL", "psycopg")


def sql_free(*texts: object) -> bool:
    return not any(word in str(t) for t in texts for word in SQL_WORDS)


def steps_done(stack, job_id: str) -> int:
    return len(records(stack.database_url, job_id)["steps"])


@pytest.fixture
def stack_factory(own_postgres, own_redis, tmp_path):
    made = []

    def make(**settings):
        made.append(make_stack(own_postgres, own_redis, tmp_path, **settings))
        made[-1].service.start_worker()
        return made[-1], made[-1].upload(arithmetic_jsonl(tmp_path / "train.jsonl"))

    yield make
    for stack in made:
        stack.stop()


def test_connections_reset_for_4_seconds_mid_job_do_not_fail_it(stack_factory, own_postgres, tmp_path):
    stack, file_id = stack_factory()
    job_id = stack.create(file_id, rounds=6, eval_problems=0)["id"]
    wait_until(lambda: steps_done(stack, job_id) >= 2, 240, "training to start", stack.service)
    terminated, until = 0, time.monotonic() + 4
    while time.monotonic() < until:
        terminated += own_postgres.terminate_connections(stack.database)
        time.sleep(0.2)
    reset_at = time.monotonic()
    before = steps_done(stack, job_id)
    recovery = timed(
        lambda: steps_done(stack, job_id) > before or stack.job(job_id)["status"] != "running",
        120,
        "training to go on",
        stack.service,
    )
    done = stack.wait(job_id)
    assert done["status"] == "succeeded", (done["error"], stack.service.logs())
    rec = assert_records_once(
        stack.database_url, job_id, tmp_path / "artifacts", rounds=6, steps_per_round=STEPS, final=True
    )
    assert terminated > 0 and sql_free(*rec["events"])
    print(
        f"\n[fault] {terminated} PostgreSQL connections reset over 4 s: training went on "
        f"{recovery:.1f} s later, finished {time.monotonic() - reset_at:.0f} s after the resets"
    )


def test_postgres_restart_mid_job_answers_503_then_the_job_resumes(stack_factory, own_postgres, tmp_path):
    stack, file_id = stack_factory()
    job_id = stack.create(file_id, rounds=8, eval_problems=0)["id"]
    wait_until(
        lambda: records(stack.database_url, job_id)["checkpoints"], 240, "a first checkpoint", stack.service
    )
    own_postgres.stop()
    try:
        with httpx.Client(
            base_url=stack.service.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=30
        ) as http:
            for path in ("/v1/fine_tuning/jobs", f"/v1/fine_tuning/jobs/{job_id}", "/v1/files", "/readyz"):
                response = http.get(path)
                assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0, response.text
                assert sql_free(response.text)
        time.sleep(8)  # longer than the lease: the sweep may hand the job on, or its worker keep it
    finally:
        own_postgres.start()
    back = time.monotonic()
    before = steps_done(stack, job_id)
    recovery = timed(
        lambda: steps_done(stack, job_id) > before or stack.job(job_id)["status"] != "running",
        180,
        "training to go on",
        stack.service,
    )
    done = stack.wait(job_id)
    assert done["status"] == "succeeded", (done["error"], stack.service.logs())
    rec = assert_records_once(
        stack.database_url, job_id, tmp_path / "artifacts", rounds=8, steps_per_round=STEPS, final=True
    )
    resumed = [m for m in rec["events"] if m.startswith("Training resumed from the checkpoint of round")]
    for message in resumed:  # a resume names a round whose checkpoint is recorded
        assert int(message.rsplit(" ", 1)[1]) in {r for r, final, _ in rec["checkpoints"] if not final}
    assert sql_free(*rec["events"])
    print(
        f"\n[fault] PostgreSQL stopped 8 s mid-job: training went on {recovery:.1f} s after it was back "
        f"({'resumed from a checkpoint' if resumed else 'same worker'}), finished {time.monotonic() - back:.0f} s later"
    )


def test_an_outage_longer_than_the_retry_window_fails_the_job_without_sql(
    stack_factory, own_postgres, tmp_path
):
    stack, file_id = stack_factory(db_retry_seconds=6, lease_seconds=60)  # the lease outlives the outage
    job_id = stack.create(file_id, rounds=200, eval_problems=0)["id"]
    wait_until(
        lambda: records(stack.database_url, job_id)["checkpoints"], 240, "a first checkpoint", stack.service
    )
    own_postgres.stop()
    time.sleep(9)  # past the worker's 6 s of retries, within the 6 s it retries recording the failure
    own_postgres.start()
    done = stack.wait(job_id, timeout=60)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "database_unavailable" and sql_free(done["error"])
    assert done["error"]["message"].startswith("The database was unreachable for 6 s")
    rec = assert_records_once(
        stack.database_url, job_id, tmp_path / "artifacts", rounds=None, steps_per_round=STEPS, final=False
    )
    assert rec["checkpoints"]  # what it trained is kept
    print(
        f"\n[fault] PostgreSQL down 9 s with a 6 s retry window: job failed cleanly: {done['error']['message']}"
    )
