"""Status races through the live API, in loops: concurrent cancels and pauses, pause and resume at
once, and cancel or pause arriving while a job finishes (its final evaluation). Every answer must
be true: a 200 is the change that happened (with exactly one event), a refusal names what won."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_kit import assert_records_once, records
from service_harness import arithmetic_jsonl, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]
STEPS = 2
CANCELLED, PAUSED, RESUMED = "Job cancelled by request", "Job paused by request", "Job resumed by request"


def fire(stack, calls: list[tuple[str, str]]) -> list[int]:
    """POST each (job, action) from its own thread, released at the same moment; the status codes."""
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[str, str]) -> int:
        job_id, action = call
        with stack.http() as http:
            barrier.wait()
            response = http.post(f"/v1/fine_tuning/jobs/{job_id}/{action}")
        assert response.status_code == 200 or set(response.json()["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }
        return response.status_code

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def count(events: list[str], prefix: str) -> int:
    return sum(e.startswith(prefix) for e in events)


def test_concurrent_cancels_pauses_and_resumes_answer_once_and_a_cancelled_job_never_runs(stack, tmp_path):
    file_id = stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))
    jobs = [stack.create(file_id)["id"] for _ in range(14)]  # no worker yet: all queued
    cancelled = []
    for job_id in jobs[:10]:  # two cancels and a pause at once
        cancel_a, cancel_b, pause = fire(stack, [(job_id, "cancel"), (job_id, "cancel"), (job_id, "pause")])
        assert sorted((cancel_a, cancel_b)) == [200, 400]
        events = records(stack.database_url, job_id)["events"]
        assert count(events, CANCELLED) == 1 and count(events, PAUSED) == (pause == 200)
        assert stack.job(job_id)["status"] == "cancelled"  # a 200 cancel is the last word
        cancelled.append(job_id)
    for job_id in jobs[10:]:  # pause and resume at once, then two resumes at once
        pause, resume = fire(stack, [(job_id, "pause"), (job_id, "resume")])
        assert pause == 200 and resume in (200, 400)
        if resume == 400:
            assert sorted(fire(stack, [(job_id, "resume"), (job_id, "resume")])) == [200, 400]
        events = records(stack.database_url, job_id)["events"]
        assert count(events, PAUSED) == 1 and count(events, RESUMED) == 1
        assert stack.job(job_id)["status"] == "queued"
    for job_id in cancelled:  # resuming a cancelled job is refused, whoever asks
        assert fire(stack, [(job_id, "resume"), (job_id, "resume")]) == [400, 400]

    stack.service.start_worker()
    for job_id in jobs[10:]:
        assert stack.wait(job_id)["status"] == "succeeded", stack.service.logs()
        assert_records_once(
            stack.database_url, job_id, tmp_path / "artifacts", rounds=3, steps_per_round=STEPS, final=True
        )
    for job_id in cancelled:
        rec = records(stack.database_url, job_id)
        assert rec["job"]["status"] == "cancelled" and not count(rec["events"], "Job running on worker")
        assert rec["steps"] == [] and rec["checkpoints"] == []


def test_cancel_or_pause_while_a_job_finishes_is_honoured_or_refused_never_both(stack, tmp_path):
    file_id = stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))
    stack.service.start_worker()
    rng = random.Random(7)
    seen = []
    for n in range(6):
        action = ("cancel", "pause")[n % 2]
        job_id = stack.create(file_id, rounds=2, eval_problems=8)["id"]  # a final evaluation of a few seconds
        wait_until(
            lambda j=job_id: any(r == 2 for r, _, _ in records(stack.database_url, j)["checkpoints"]),
            240,
            "the last round's checkpoint",
            stack.service,
            every=0.1,
        )
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in the final evaluation, or just after it
        (code,) = fire(stack, [(job_id, action)])
        if code == 200:  # the worker, still evaluating, must stop without recording success
            wait_until(
                lambda j=job_id: (
                    count(stack.events(j), "Training finished, but the job was")
                    or count(stack.events(j), "Training stopped")
                ),
                120,
                "the worker to stop",
                stack.service,
            )
            rec = records(stack.database_url, job_id)
            assert rec["job"]["status"] == {"cancel": "cancelled", "pause": "paused"}[action]
            assert rec["job"]["fine_tuned_model"] is None and not any(
                final for _, final, _ in rec["checkpoints"]
            )
        if action == "pause" and code == 200:
            wait_until(
                lambda j=job_id: fire(stack, [(j, "resume")]) == [200], 120, "the resume", stack.service
            )
        done = stack.wait(job_id)
        expected = {("cancel", 200): "cancelled", ("pause", 200): "succeeded"}.get(
            (action, code), "succeeded"
        )
        assert done["status"] == expected, (action, code, done)
        rec = assert_records_once(
            stack.database_url,
            job_id,
            tmp_path / "artifacts",
            rounds=None if expected == "cancelled" else 2,
            steps_per_round=STEPS,
            final=expected == "succeeded",
        )
        assert (done["fine_tuned_model"] is None) == (expected == "cancelled")
        if code == 400:  # it had succeeded first: the refusal says so and changes nothing
            assert stack.job(job_id)["status"] == "succeeded"
        seen.append(
            (action, code, "finished first" if count(rec["events"], "Training finished, but") else "")
        )
    print(f"\n[races] cancel / pause while a job finishes: {seen}")
