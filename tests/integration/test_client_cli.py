"""``rapid jobs`` / ``rapid files`` as a user runs them: a subprocess against a live ``rapid serve``
(embedded defaults, a real worker, the tiny random model), key and URL from the environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest
import yaml
from service_harness import ROOT, Service, arithmetic_jsonl, service_env, tiny_hyperparameters, wait_until

pytestmark = pytest.mark.integration
GRADER_SHORT = "numeric:{{item.answer}}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("client")
    service = Service(service_env(work), work)
    try:
        service.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def env(served) -> dict[str, str]:
    return {**served.env, "RAPID_BASE_URL": served.base_url, "RAPID_API_KEY": served.create_key("cli")}


def rapid(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "rapid_cli.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hp_flags(**over) -> list[str]:
    return [f for k, v in tiny_hyperparameters(**over).items() for f in ("--hp", f"{k}={json.dumps(v)}")]


def test_create_follow_and_download_a_job(served, env, tmp_path):
    train = arithmetic_jsonl(tmp_path / "train.jsonl")
    held_out = arithmetic_jsonl(tmp_path / "eval.jsonl", n=6)
    upload = rapid(env, "files", "upload", str(train))
    assert upload.returncode == 0, upload.stderr
    file_id = upload.stdout.strip()
    assert file_id.startswith("file-") and "40 records" in upload.stderr
    assert file_id in rapid(env, "files", "list").stdout

    grader = tmp_path / "grader.yaml"
    grader.write_text(yaml.safe_dump({"type": "numeric", "reference": "{{item.answer}}"}))
    hp_file = tmp_path / "hp.yaml"
    hp_file.write_text(yaml.safe_dump({**tiny_hyperparameters(), "rounds": 9}))
    created = rapid(
        env,
        "jobs",
        "create",
        "-t",
        file_id,
        "-v",
        str(held_out),
        "-g",
        str(grader),
        "-m",
        "tiny-random",
        "--hyperparameters",
        str(hp_file),
        "--hp",
        "rounds=3",
        "--seed",
        "1",
        "--follow",
        "--interval",
        "0.5",
    )
    assert created.returncode == 0, created.stderr + served.logs()
    job_id = created.stdout.splitlines()[0]
    assert "3/3, succeeded, reward" in created.stderr  # the per-round lines of a non-terminal follow
    assert "held-out pass@1:" in created.stderr and "The job has successfully completed" in created.stderr

    listed = rapid(env, "jobs", "list")
    assert any(line.split()[:2] == [job_id, "succeeded"] for line in listed.stdout.splitlines())
    job = json.loads(rapid(env, "jobs", "get", job_id).stdout)
    hp = job["method"]["reinforcement"]["hyperparameters"]
    assert job["validation_file"].startswith("file-") and hp["rounds"] == 3 and hp["lora_r"] == 4  # --hp wins
    assert "successfully completed" in rapid(env, "jobs", "events", job_id).stdout
    checkpoints = rapid(env, "jobs", "checkpoints", job_id).stdout.splitlines()
    assert (
        checkpoints[0].split() == ["ID", "ROUND", "STEP", "REWARD", "PASS@1", "BEST", "CREATED"]
        and "final" in checkpoints[1]
    )

    downloaded = rapid(env, "jobs", "download", job_id, "-o", str(tmp_path / "adapter"))
    assert downloaded.returncode == 0, downloaded.stderr
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rapid_core.models import ensure_tiny_model

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(ensure_tiny_model()), downloaded.stdout.strip()
    )
    assert model.peft_config["default"].r == 4


def test_eval_interval_scores_checkpoints_and_the_best_one_downloads(served, env, tmp_path):
    train = arithmetic_jsonl(tmp_path / "train.jsonl")
    held_out = arithmetic_jsonl(tmp_path / "eval.jsonl", n=6)
    # 2 steps a round: eval_interval=3 evaluates at the boundaries of steps 4 and 6 (and 6 is the last).
    created = rapid(
        env,
        "jobs",
        "create",
        "-t",
        str(train),
        "-v",
        str(held_out),
        "-g",
        GRADER_SHORT,
        "-m",
        "tiny-random",
        *hp_flags(rounds=3, eval_interval=3, keep_checkpoints=1),
        "--follow",
        "--interval",
        "0.5",
    )
    assert created.returncode == 0, created.stderr + served.logs()
    job_id = created.stdout.splitlines()[0]

    key = {"Authorization": f"Bearer {env['RAPID_API_KEY']}"}
    http = httpx.Client(base_url=f"{served.base_url}/v1/fine_tuning/jobs/{job_id}", headers=key, timeout=60)
    evals = http.get("/metrics", params={"kind": "eval"}).json()["data"]
    interval = [m for m in evals if m["phase"] == "interval"]
    assert [(m["step"], m["round"]) for m in interval] == [(4, 2), (6, 3)]
    assert all(m["metrics"]["problems"] == 3 for m in interval)
    events = rapid(env, "jobs", "events", job_id).stdout
    for m in interval:
        assert f"Step {m['step']}: held-out pass@1 {m['metrics']['pass@1']:.3g} on 3 problems" in events
    scores = [m["metrics"]["pass@1"] for m in interval]
    best_round = interval[scores.index(max(scores))]["round"]  # the earlier on a tie
    assert (
        f"best checkpoint: step {2 * best_round} (round {best_round}), held-out pass@1 {max(scores):.3f}"
        in created.stderr
    )
    assert f"New best checkpoint: step {2 * best_round} (round {best_round})" in events

    checkpoints = http.get("/checkpoints").json()["data"]
    best = [c for c in checkpoints if c["best"]]
    assert [c["round"] for c in best] == [best_round] and not best[0]["final"]
    assert best[0]["metrics"]["full_valid_pass@1"] == max(scores)
    scored = {c["round"]: c["metrics"].get("full_valid_pass@1") for c in checkpoints if not c["final"]}
    assert scored == {1: None, 2: scores[0], 3: scores[1]}  # round 1 was not evaluated
    listed = rapid(env, "jobs", "checkpoints", job_id).stdout.splitlines()
    assert [line.split()[0] for line in listed if line.split()[-3] == "best"] == [best[0]["id"]]

    downloaded = rapid(env, "jobs", "download", job_id, "--best", "-o", str(tmp_path / "best"))
    assert downloaded.returncode == 0, downloaded.stderr
    archive = http.get(f"/checkpoints/{best[0]['id']}/adapter").content
    assert http.get("/checkpoints/best/adapter").content == archive
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rapid_core.models import ensure_tiny_model

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(ensure_tiny_model()), downloaded.stdout.strip()
    )
    assert model.peft_config["default"].r == 4
    both = rapid(env, "jobs", "download", job_id, "--best", "--checkpoint", best[0]["id"])
    assert both.returncode == 2 and "--best" in both.stderr


def test_the_best_checkpoint_survives_pause_resume_and_cancel(served, env, tmp_path):
    train = arithmetic_jsonl(tmp_path / "train.jsonl")
    held_out = arithmetic_jsonl(tmp_path / "eval.jsonl", n=6)
    created = rapid(
        env,
        "jobs",
        "create",
        "-t",
        str(train),
        "-v",
        str(held_out),
        "-g",
        GRADER_SHORT,
        "-m",
        "tiny-random",
        *hp_flags(rounds=100_000, eval_interval=2, keep_checkpoints=1),
    )
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    key = {"Authorization": f"Bearer {env['RAPID_API_KEY']}"}
    http = httpx.Client(base_url=f"{served.base_url}/v1/fine_tuning/jobs/{job_id}", headers=key, timeout=60)
    status = lambda: http.get(f"{served.base_url}/v1/fine_tuning/jobs/{job_id}").json()["status"]  # noqa: E731

    def interval():
        return [
            m
            for m in http.get("/metrics", params={"kind": "eval"}).json()["data"]
            if m["phase"] == "interval"
        ]

    wait_until(
        lambda: http.get("/checkpoints/best/adapter").status_code == 200, 180, "a best checkpoint", served
    )
    assert http.post("/pause").status_code == 200
    wait_until(lambda: http.post("/resume").status_code == 200, 60, "the paused job to accept resume", served)
    wait_until(lambda: status() == "running", 180, "the resumed job to run", served)
    seen = len(interval())
    wait_until(lambda: len(interval()) > seen + 1, 180, "evaluations of the resumed run", served, every=1.0)
    assert http.post("/cancel").status_code == 200
    wait_until(lambda: status() == "cancelled", 60, "the job to be cancelled", served)

    evals = interval()  # one per evaluated boundary: each at the round's last step, none redone twice
    assert [(m["round"], m["step"]) for m in evals] == [(r, 2 * r) for r in range(1, len(evals) + 1)]
    scores = [m["metrics"]["pass@1"] for m in evals]
    ckpts = http.get("/checkpoints", params={"limit": 1000}).json()["data"]
    best = [c for c in ckpts if c["best"]]
    assert len(best) == 1 and best[0]["metrics"]["full_valid_pass@1"] == max(scores)
    assert best[0]["round"] == scores.index(max(scores)) + 1  # the earliest top score of the kept history
    archive = http.get("/checkpoints/best/adapter")
    assert (
        archive.status_code == 200
        and archive.content == http.get(f"/checkpoints/{best[0]['id']}/adapter").content
    )
    downloaded = rapid(env, "jobs", "download", job_id, "--best", "-o", str(tmp_path / "best"))
    assert downloaded.returncode == 0 and (tmp_path / "best" / "adapter_config.json").is_file()


def test_follow_exits_1_when_the_job_is_cancelled_after_pause_and_resume(served, env, tmp_path):
    train = arithmetic_jsonl(tmp_path / "train.jsonl")
    created = rapid(
        env,
        "jobs",
        "create",
        "-t",
        str(train),
        "-g",
        GRADER_SHORT,
        "-m",
        "tiny-random",
        *hp_flags(rounds=100_000),
    )
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    follow = subprocess.Popen(
        [sys.executable, str(ROOT / "rapid_cli.py"), "jobs", "follow", job_id, "--interval", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = lambda: json.loads(rapid(env, "jobs", "get", job_id).stdout)["status"]  # noqa: E731
        wait_until(lambda: status() == "running", 180, "the job to run", served)
        assert rapid(env, "jobs", "pause", job_id).stdout.strip() == f"{job_id}: paused"
        resumed = wait_until(
            lambda: (r := rapid(env, "jobs", "resume", job_id)).returncode == 0 and r,
            60,
            "the paused job to stop and accept resume",
            served,
            every=1.0,
        )
        assert resumed.stdout.strip() == f"{job_id}: queued"
        wait_until(lambda: status() == "running", 180, "the resumed job to run", served)
        # A round of the resumed run is recorded (and so shown by follow) before the cancel.
        key = {"Authorization": f"Bearer {env['RAPID_API_KEY']}"}

        def rounds():
            url = f"{served.base_url}/v1/fine_tuning/jobs/{job_id}/metrics"
            return httpx.get(url, params={"kind": "round"}, headers=key, timeout=30).json()["data"]

        before = len(rounds())
        wait_until(lambda: len(rounds()) > before, 180, "a round of the resumed job", served, every=1.0)
        assert rapid(env, "jobs", "cancel", job_id).returncode == 0
        _, err = follow.communicate(timeout=120)
    finally:
        follow.kill()
    assert follow.returncode == 1, err
    assert f"job {job_id} cancelled" in err and "Job paused by request" in err
    assert re.search(rf"{job_id}: round \d+/100000, running, reward \d\.\d{{3}}, acc \d\.\d{{3}}, stale", err)


def test_errors_are_clear_and_exit_non_zero(served, env, tmp_path):
    no_key = {k: v for k, v in env.items() if k not in ("RAPID_API_KEY", "OPENAI_API_KEY")}
    out = rapid(no_key, "jobs", "list")
    assert out.returncode == 2 and "no API key" in out.stderr
    out = rapid(
        {**no_key, "OPENAI_API_KEY": "rk-wrong", "OPENAI_BASE_URL": served.base_url + "/v1"}, "jobs", "list"
    )
    assert out.returncode == 1 and "Incorrect API key" in out.stderr and "HTTP 401" in out.stderr
    out = rapid({**env, "RAPID_BASE_URL": "http://127.0.0.1:9"}, "jobs", "list")
    assert out.returncode == 1 and "cannot reach the server" in out.stderr
    out = rapid(env, "jobs", "get", "ftjob-missing")
    assert out.returncode == 1 and "ftjob-missing" in out.stderr
    out = rapid(env, "jobs", "create", "-t", str(tmp_path / "nope.jsonl"), "-g", GRADER_SHORT)
    assert out.returncode == 2 and "neither a local file nor a file id" in out.stderr
    train = str(arithmetic_jsonl(tmp_path / "train.jsonl"))
    out = rapid(env, "jobs", "create", "-t", train, "-g", GRADER_SHORT, "--hp", "rounds")
    assert out.returncode == 2 and "expected KEY=VALUE" in out.stderr
    out = rapid(
        env, "jobs", "create", "-t", train, "-g", GRADER_SHORT, "-m", "tiny-random", "--hp", "group_size=1"
    )
    assert out.returncode == 1 and "group_size" in out.stderr and "HTTP 400" in out.stderr
    out = rapid(env, "jobs", "create", "-t", train)
    assert out.returncode == 2 and "--grader" in out.stderr  # argparse: a required flag
    assert rapid(env, "jobs", "--help").returncode == 0
