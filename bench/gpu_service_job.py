"""A real fine-tuning job through the service on a GPU worker, end to end, with the official client.

Starts the API on the embedded defaults (SQLite, filesystem broker, data in a fresh directory) and a
separate worker that consumes only the ``cuda`` queue; creates a key; uploads the arithmetic task's
train and held-out splits; creates a reinforcement job with ``openai``'s client (device cuda, so it
goes to the cuda queue); follows it to the end, printing each round; downloads the adapter, unpacks
it and evaluates it again with ``rapid eval --adapter`` (PEFT load of the downloaded files).

    python bench/gpu_service_job.py --out bench/results/gpu_service_job.json
    python bench/gpu_service_job.py --device cpu --rounds 2 --model tiny-random   # smoke test here

Exits non-zero when the job does not succeed or the downloaded adapter does not load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import openai

from common import ROOT, machine, save  # isort: skip
from rapid_core.config import make_config  # noqa: E402
from rapid_core.tasks import arithmetic_task  # noqa: E402

GRADER = {"type": "numeric", "reference": "{{item.answer}}"}
TERMINAL = ("succeeded", "failed", "cancelled")
ROUND_KEYS = (
    "reward_mean",
    "accuracy",
    "gen_s",
    "train_s",
    "decode_ms_per_step",
    "gen_tokens_per_s",
    "peak_mem_gb",
)


def wait_ready(base: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(240):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the API exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise SystemExit(f"the API did not become ready:\n{log.read_text()[-3000:]}")


def write_jsonl(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="queue and device of the job")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--rounds", type=int, default=24)
    p.add_argument("--hp", action="append", default=[], metavar="KEY=JSON", help="extra hyperparameter")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    hyper = {
        "rounds": args.rounds,
        "prompts_per_round": 32,
        "group_size": 8,
        "mini_batch_size": 32,
        "minibatch_grouping": "groups",
        "max_new_tokens": 16,
        "temperature": 0.7,
        "learning_rate": 3e-4,
        "eval_problems": 94,
        "eval_k": 4,
        "gen_micro_batch": 512,
        "device": args.device,
    }
    for item in args.hp:
        key, _, value = item.partition("=")
        hyper[key] = json.loads(value)

    data = Path(tempfile.mkdtemp(prefix="rapid-gpu-service-"))
    env = {
        **os.environ,
        "RAPID_DATABASE_URL": f"sqlite:///{data / 'rapid.db'}",
        "RAPID_BROKER_DIR": str(data / "broker"),
        "RAPID_ARTIFACTS_DIR": str(data / "artifacts"),
        "RAPID_RUNS_DIR": str(data / "runs"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    base = f"http://127.0.0.1:{args.port}"
    api_log, worker_log = data / "api.log", data / "worker.log"
    started = time.perf_counter()
    api = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--no-worker", "--port", str(args.port)],
        env=env,
        cwd=data,
        stdout=api_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        wait_ready(base, api, api_log)
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env={**env, "RAPID_WORKER_QUEUES": args.device},
            cwd=data,
            stdout=worker_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        key = subprocess.run(
            [sys.executable, "-m", "api.cli", "keys", "create", "--project", "gpu"],
            env=env,
            cwd=data,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        client = openai.OpenAI(api_key=key, base_url=f"{base}/v1")
        http = httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"})
        task = arithmetic_task(make_config(task="arithmetic"))
        train = client.files.create(
            file=write_jsonl(task.train, data / "train.jsonl").open("rb"), purpose="fine-tune"
        )
        held = client.files.create(
            file=write_jsonl(task.eval, data / "eval.jsonl").open("rb"), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model=args.model,
            training_file=train.id,
            validation_file=held.id,
            seed=0,
            method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": hyper}},
        )
        print(
            f"job {job.id} created ({time.perf_counter() - started:.1f} s after start): {hyper}", flush=True
        )
        seen, deadline = 0, time.monotonic() + args.timeout
        while True:
            job = client.fine_tuning.jobs.retrieve(job.id)
            rounds = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "round"}).json()[
                "data"
            ]
            for r in rounds[seen:]:
                m = r["metrics"]
                print(
                    f"round {m.get('round')}: "
                    + ", ".join(f"{k}={m[k]:.3g}" for k in ROUND_KEYS if isinstance(m.get(k), int | float)),
                    flush=True,
                )
            seen = len(rounds)
            if job.status in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(1)
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data][::-1]
        evals = {
            e["phase"]: e["metrics"]
            for e in http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "eval"}).json()[
                "data"
            ]
        }
        result = {
            "machine": machine(),
            "job_id": job.id,
            "status": job.status,
            "hyperparameters": hyper,
            "wall_s": time.perf_counter() - started,
            "events": events,
            "eval": {
                phase: {k: v for k, v in m.items() if k.startswith("pass@") or k == "problems"}
                for phase, m in evals.items()
            },
            "rounds": [r["metrics"] for r in rounds],
        }
        for m in result["rounds"]:
            m.pop("example", None)
        print("\n".join(events[-6:]))
        if job.status != "succeeded":
            print(
                f"job {job.status}: {job.error}\n--- worker log\n{worker_log.read_text()[-4000:]}",
                file=sys.stderr,
            )
            save(result, args.out, "gpu_service_job.json")
            return 1
        archive = http.get(f"/v1/fine_tuning/jobs/{job.id}/adapter")
        archive.raise_for_status()
        adapter = data / "adapter"
        with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
            tar.extractall(adapter, filter="data")
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "rapid_core.cli",
                "eval",
                "--model",
                args.model,
                "--adapter",
                str(adapter),
                "--eval-problems",
                "94",
                "--eval-k",
                "1",
                "--max-new-tokens",
                "16",
                "--device",
                args.device,
            ],
            env=env,
            cwd=data,
            capture_output=True,
            text=True,
        )
        reloaded = json.loads(check.stdout) if check.returncode == 0 else {"error": check.stderr[-2000:]}
        result["downloaded_adapter_eval"] = {k: v for k, v in reloaded.items() if k != "example"}
        before, after = result["eval"].get("before", {}), result["eval"].get("after", {})
        print(
            f"held-out pass@1 before {before.get('pass@1')}, after {after.get('pass@1')}; "
            f"pass@4 before {before.get('pass@4')}, after {after.get('pass@4')}"
        )
        print(
            f"downloaded adapter re-evaluated with rapid eval: pass@1 {reloaded.get('pass@1')} "
            f"{reloaded.get('error', '')}"
        )
        save(result, args.out, "gpu_service_job.json")
        return 0 if check.returncode == 0 else 1
    finally:
        for proc in (worker, api):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main())
