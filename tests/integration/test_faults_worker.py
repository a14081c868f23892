"""Worker and disk faults: a worker SIGKILLed mid-job, a full disk under the worker and under the
API, and the worker's memory across consecutive jobs (a fresh pool child per job)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from fault_kit import assert_records_once, make_stack, records, seen_by, small_disk, timed
from service_harness import arithmetic_jsonl, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]
STEPS = 2
MB = 1 << 20


def recorded_rounds(stack, job_id: str) -> list[int]:
    return sorted(r for r, final, _ in records(stack.database_url, job_id)["checkpoints"] if not final)


def test_worker_killed_mid_job_resumes_from_its_newest_recorded_checkpoint(stack, tmp_path):
    file_id = stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))
    first = stack.service.start_worker()
    job_id = stack.create(file_id, rounds=8, eval_problems=0)["id"]
    wait_until(lambda: len(recorded_rounds(stack, job_id)) >= 2, 240, "two checkpoints", stack.service, 0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no goodbye
    first.wait()
    killed, newest = time.monotonic(), recorded_rounds(stack, job_id)[-1]
    stack.service.start_worker()
    recovery = timed(
        lambda: any(m.startswith("Training resumed") for m in stack.events(job_id)),
        180,
        "the job to resume",
        stack.service,
    )
    assert stack.wait(job_id)["status"] == "succeeded", stack.service.logs()
    rec = assert_records_once(
        stack.database_url, job_id, tmp_path / "artifacts", rounds=8, steps_per_round=STEPS, final=True
    )
    resumed = [m for m in rec["events"] if m.startswith("Training resumed from the checkpoint of round")]
    assert [int(m.rsplit(" ", 1)[1]) for m in resumed] == [newest], rec["events"]
    print(
        f"\n[fault] worker SIGKILL mid-job: resumed from round {newest} {recovery:.1f} s after the kill "
        f"(lease 6 s), succeeded {time.monotonic() - killed:.0f} s after it"
    )


def test_full_disk_under_the_worker_fails_the_job_clearly(stack, tmp_path):
    file_id = stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))
    # One checkpoint of the tiny model takes ~190 kB: the second one does not fit.
    stack.service.start_worker(wrap=tuple(small_disk(tmp_path / "runs", "300k")))
    job_id = stack.create(file_id, rounds=20, eval_problems=0)["id"]
    done = stack.wait(job_id, timeout=240)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "disk_full", done["error"]
    assert done["error"]["message"] == "The worker ran out of disk space while writing the job's files"
    rec = assert_records_once(
        stack.database_url, job_id, tmp_path / "artifacts", rounds=None, steps_per_round=STEPS, final=False
    )
    assert rec["rounds"] and rec["events"][-1].startswith("Job failed")
    print(
        f"\n[fault] worker disk full: job failed with {done['error']['code']!r} after {len(rec['rounds'])} rounds"
    )


def test_full_disk_under_the_api_answers_507_and_leaves_nothing_behind(own_postgres, own_redis, tmp_path):
    artifacts = tmp_path / "artifacts"
    stack = make_stack(own_postgres, own_redis, tmp_path, api_wrap=tuple(small_disk(artifacts, "1m")))
    try:
        big = tmp_path / "big.jsonl"
        big.write_text(
            '{"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}\n' * 50_000
        )  # 3.4 MB
        with stack.http() as http, big.open("rb") as f:
            response = http.post("/v1/files", files={"file": ("big.jsonl", f)}, data={"purpose": "fine-tune"})
            assert response.status_code == 507, response.text
            assert response.json()["error"]["code"] == "insufficient_storage"
            assert http.get("/v1/files").json()["data"] == []
        inside = seen_by(stack.service.api.pid, artifacts)  # the API's tmpfs, as the API sees it
        assert inside.is_dir() and not list(inside.rglob("*.part")) and not list(inside.rglob("*.jsonl"))
        assert stack.upload(arithmetic_jsonl(tmp_path / "small.jsonl"))  # room for a small file still
    finally:
        stack.stop()


def tree_rss(proc: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def test_each_job_runs_in_a_fresh_child_whose_memory_goes_back_when_it_ends(stack, tmp_path):
    file_id = stack.upload(arithmetic_jsonl(tmp_path / "train.jsonl"))
    worker = psutil.Process(stack.service.start_worker().pid)
    idle, children = [], []
    for _ in range(3):
        ran_on = {c.pid for c in worker.children()}
        job_id = stack.create(file_id)["id"]
        assert stack.wait(job_id)["status"] == "succeeded", stack.service.logs()
        wait_until(
            lambda r=ran_on: (kids := worker.children()) and all(k.pid not in r for k in kids),
            60,
            "a fresh pool child",
            stack.service,
        )
        time.sleep(1)
        child = worker.children()[0]
        children.append(child.pid)
        assert not any("libtorch" in m.path for m in child.memory_maps()), "the idle child holds torch"
        idle.append(tree_rss(worker))
    assert len(set(children)) == 3
    assert max(idle) < 600 * MB and idle[2] < idle[0] + 50 * MB, idle
    print(f"\n[memory] idle worker RSS after each of 3 tiny jobs: {[round(r / MB) for r in idle]} MB")
