"""The worker's memory over consecutive jobs: RSS of the worker process tree (the Celery parent and its
pool child) while idle before the first job, at the peak of each job and idle after each.

Each job runs in a fresh pool child (``worker_max_tasks_per_child=1``), so the model's memory goes
back to the system when the job ends. ``--keep-child`` runs the worker the old way (one pool child
for every job) for comparison.

    .venv/bin/python bench/worker_rss.py --model smollm2-135m-instruct --jobs 3
    .venv/bin/python bench/worker_rss.py --model smollm2-135m-instruct --jobs 3 --keep-child
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.service_harness import (  # noqa: E402  (the real-service launcher the tests use)
    GRADER,
    Service,
    arithmetic_jsonl,
    service_env,
    wait_until,
)

MB = 1 << 20
HYPER = {
    "rounds": 2,
    "group_size": 4,
    "prompts_per_round": 4,
    "mini_batch_size": 8,
    "max_new_tokens": 16,
    "eval_problems": 8,
    "eval_k": 1,
    "lora_r": 8,
}


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(model: str, jobs: int, keep_child: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="rapid-rss-") as tmp:
        work = Path(tmp)
        service = Service(
            service_env(
                work,
                database_url=f"sqlite:///{work / 'rapid.db'}",
                broker_dir=work / "broker",
                artifacts_dir=work / "artifacts",
                runs_dir=work / "runs",
            ),
            work,
        )
        try:
            service.start_api()
            key = service.create_key("rss")
            worker = service.start_worker(extra=("--max-tasks-per-child=1000000",) if keep_child else ())
            parent = psutil.Process(worker.pid)
            http = service.http(key)
            with arithmetic_jsonl(work / "train.jsonl").open("rb") as f:
                file_id = http.post(
                    "/v1/files", files={"file": ("t.jsonl", f)}, data={"purpose": "fine-tune"}
                ).json()["id"]
            time.sleep(3)
            rows = [{"when": "idle before the first job", "rss_mb": round(tree_rss(parent) / MB)}]
            for n in range(1, jobs + 1):
                body = {
                    "model": model,
                    "training_file": file_id,
                    "seed": n,
                    "method": {
                        "type": "reinforcement",
                        "reinforcement": {"grader": GRADER, "hyperparameters": HYPER},
                    },
                }
                job_id = http.post("/v1/fine_tuning/jobs", json=body).json()["id"]
                peak, done = [0], threading.Event()

                def sample(peak=peak, done=done) -> None:
                    while not done.wait(0.5):
                        peak[0] = max(peak[0], tree_rss(parent))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.monotonic()
                job = wait_until(
                    lambda j=job_id: (
                        (r := http.get(f"/v1/fine_tuning/jobs/{j}").json())["status"]
                        in ("succeeded", "failed", "cancelled")
                        and r
                    ),
                    1800,
                    f"job {n}",
                    service,
                    1.0,
                )
                seconds = time.monotonic() - started
                done.set()
                sampler.join()
                time.sleep(5)  # the pool replaces its child; let the tree settle
                rows.append(
                    {
                        "when": f"job {n} ({job['status']}, {seconds:.0f} s)",
                        "peak_mb": round(peak[0] / MB),
                        "rss_mb": round(tree_rss(parent) / MB),
                    }
                )
                print(rows[-1], file=sys.stderr)
            return {"model": model, "child_per_job": not keep_child, "rows": rows}
        finally:
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--keep-child", action="store_true", help="one pool child for all jobs (the old way)")
    parser.add_argument("--out", help="append the result as one JSON line to this file")
    args = parser.parse_args()
    result = run(args.model, args.jobs, args.keep_child)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
