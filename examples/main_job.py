"""The README's main job, through the service: start ``rapid serve`` on the embedded defaults,
create an API key, upload the arithmetic task, fine-tune SmolLM2-135M-Instruct with RAPID, follow
it, download the adapter and print held-out accuracy before and after.

    python examples/main_job.py            # data under ./rapid-data, API on 127.0.0.1:8000

Exits non-zero if the job does not succeed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import openai
from tqdm import tqdm

from rapid_core.config import make_config
from rapid_core.tasks import arithmetic_task

GRADER = {"type": "numeric", "reference": "{{item.answer}}"}
# Tuned on this 2-core CPU (see docs/main-job.md): B = 16 prompts x 8 = 128 samples a round,
# m = 32 (U = 4 steps a round), short answers, T = 0.7, all 94 held-out problems evaluated.
MAIN_JOB = {"rounds": 12, "prompts_per_round": 16, "group_size": 8, "mini_batch_size": 32,
            "max_new_tokens": 16, "temperature": 0.7, "learning_rate": 3e-4, "eval_problems": 94, "eval_k": 4}
TERMINAL = ("succeeded", "failed", "cancelled")


def start_service(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit(f"rapid serve exited early; see {log}")
        time.sleep(0.5)
    proc.terminate()
    sys.exit(f"rapid serve did not become ready; see {log}")


def create_key(project: str) -> str:
    out = subprocess.run([sys.executable, "-m", "api.cli", "keys", "create", "--project", project],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def write_jsonl(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def follow(client: openai.OpenAI, http: httpx.Client, job_id: str, total_rounds: int | None):
    """A progress bar over rounds, fed by the job's round metrics; returns the finished job."""
    bar = tqdm(total=total_rounds, unit="round", desc=job_id)
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        rounds = http.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"kind": "round"}).json()["data"]
        if rounds:
            last = rounds[-1]["metrics"]
            bar.set_postfix(status=job.status, reward=f"{last.get('reward_mean', 0):.3f}")
        else:
            bar.set_postfix(status=job.status)
        bar.update(len(rounds) - bar.n)
        if job.status in TERMINAL:
            bar.close()
            return job
        time.sleep(2)


def held_out_accuracy(http: httpx.Client, job_id: str) -> dict[str, dict]:
    evals = http.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"kind": "eval"}).json()["data"]
    return {e["phase"]: e["metrics"] for e in evals}


def download_adapter(http: httpx.Client, job_id: str, dest: Path) -> Path:
    response = http.get(f"/v1/fine_tuning/jobs/{job_id}/adapter")
    response.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, help=f"RAPID inference rounds (default: {MAIN_JOB['rounds']})")
    parser.add_argument("--eval-problems", type=int, help="held-out problems evaluated before and after")
    parser.add_argument("--seed", type=int, default=0, help="job seed (data order, sampling, LoRA init)")
    parser.add_argument("--adapter-dir", type=Path, default=Path("rapid-data/main-job-adapter"))
    args = parser.parse_args()

    service = start_service(args.port, Path(tempfile.gettempdir()) / "rapid-serve.log")
    try:
        client = openai.OpenAI(api_key=create_key("readme"), base_url=f"http://127.0.0.1:{args.port}/v1")
        http = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120,
                            headers={"Authorization": f"Bearer {client.api_key}"})  # fmt: skip
        task = arithmetic_task(make_config(task="arithmetic"))
        with tempfile.TemporaryDirectory() as tmp:
            train = client.files.create(file=write_jsonl(task.train, Path(tmp) / "train.jsonl").open("rb"),
                                        purpose="fine-tune")  # fmt: skip
            held_out = client.files.create(file=write_jsonl(task.eval, Path(tmp) / "eval.jsonl").open("rb"),
                                           purpose="fine-tune")  # fmt: skip
        given = {"rounds": args.rounds, "eval_problems": args.eval_problems}
        hyper = {**MAIN_JOB, **{k: v for k, v in given.items() if v is not None}}
        job = client.fine_tuning.jobs.create(
            model=args.model, training_file=train.id, validation_file=held_out.id, seed=args.seed,
            method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": hyper}},
        )  # fmt: skip
        print(f"job {job.id}: {train.lines} training problems, {held_out.lines} held out")
        job = follow(client, http, job.id, job.method.reinforcement.hyperparameters.rounds)
        if job.status != "succeeded":
            print(f"job {job.id} {job.status}: {job.error}", file=sys.stderr)
            return 1
        adapter = download_adapter(http, job.id, args.adapter_dir)
        accuracy = held_out_accuracy(http, job.id)
        print(f"adapter: {adapter} (load with peft.PeftModel.from_pretrained)")
        before, after = accuracy.get("before", {}), accuracy.get("after", {})
        for key in ("pass@1", f"pass@{MAIN_JOB['eval_k']}"):
            print(f"held-out {key} on {after.get('problems')} problems: "
                  f"before {before.get(key, float('nan')):.3f}, after {after.get(key, float('nan')):.3f}")
        return 0
    finally:
        service.terminate()
        service.wait(60)


if __name__ == "__main__":
    sys.exit(main())
