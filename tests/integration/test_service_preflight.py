"""Pre-flight through the real service on the embedded defaults (``rapid serve``: SQLite, the
filesystem broker, its own worker; a 1 s grace and a cpu-only worker) with the tiny random model: the report, its warnings, the
refusals, the CLI, and that no job is left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from service_harness import (
    GRADER,
    ROOT,
    Service,
    arithmetic_jsonl,
    service_env,
    tiny_hyperparameters,
    wait_until,
)

pytestmark = pytest.mark.integration
CONSTANT = {"type": "python", "source": "def grade(sample, item):\n    return 0.5\n"}  # runs in the sandbox


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("preflight")
    service = Service(service_env(work, preflight_grace_seconds="1", worker_queues="cpu"), work)
    try:
        service.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def key(served) -> str:
    return served.create_key("preflight")


@pytest.fixture(scope="module")
def training(served, key, tmp_path_factory) -> str:
    path = arithmetic_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl")
    return served.client(key).files.create(file=path.open("rb"), purpose="fine-tune").id


def body(training: str, grader: dict = GRADER, **extra) -> dict:
    hp = tiny_hyperparameters(torch_threads=1, **extra.pop("hp", {}))
    return {
        "model": "tiny-random",
        "training_file": training,
        "seed": 1,
        **extra,
        "method": {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hp}},
    }


def finished(served: Service, key: str, preflight_id: str) -> dict:
    http = served.http(key)

    def done():
        run = http.get(f"/v1/fine_tuning/preflights/{preflight_id}").json()
        return run if run["status"] not in ("queued", "running") else None

    return wait_until(done, 180, f"pre-flight {preflight_id}", served, every=0.5)


def test_preflight_reports_on_a_job_body_and_writes_no_job(served, key, training):
    http = served.http(key)
    created = http.post("/v1/fine_tuning/preflights", json=body(training, prompts=3))
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["object"] == "fine_tuning.preflight" and run["status"] == "queued" and run["queue"] == "cpu"
    run = finished(served, key, run["id"])
    assert run["status"] == "succeeded", run["error"] or served.logs()
    report = run["report"]
    assert (report["prompts"], report["group_size"], report["samples"]) == (3, 2, 6)
    assert 0 <= report["reward"]["mean"] <= 1 and report["reward"]["std"] >= 0
    assert 0 <= report["zero_variance_share"] <= 1
    assert report["grader"]["errors"] == report["grader"]["timeouts"] == 0
    assert report["grader"]["latency_s"]["p90"] >= report["grader"]["latency_s"]["p50"] > 0
    assert report["completions"]["max_new_tokens"] == 6 and 1 <= report["completions"]["tokens"]["max"] <= 6
    eta = report["eta"]
    assert (
        eta["samples"] == 3 * 2 * 2 + 2 * 3 and eta["steps"] == 6
    )  # 3 rounds of 4 samples, 2 evaluations of 3
    assert eta["train_step_s"] > 0 and eta["seconds"] > 0 and report["device"] == "cpu"
    assert any(w.startswith("Estimated time for the whole job") for w in report["warnings"])
    # Nothing a real job would need: no job, and the worker's scratch folder is gone.
    assert served.client(key).fine_tuning.jobs.list().data == []
    runs = served.workdir / "rapid-data" / "runs"
    assert not runs.exists() or not any(p.name.startswith(run["id"]) for p in runs.iterdir())
    # Another project cannot read it.
    other = served.http(served.create_key("someone-else")).get(f"/v1/fine_tuning/preflights/{run['id']}")
    assert other.status_code == 404 and other.json()["error"]["param"] == "preflight_id"


def test_a_constant_grader_gets_the_no_signal_warning(served, key, training):
    run = served.http(key).post("/v1/fine_tuning/preflights", json=body(training, CONSTANT, prompts=2)).json()
    run = finished(served, key, run["id"])
    assert run["status"] == "succeeded", run["error"] or served.logs()
    report = run["report"]
    assert (
        report["zero_variance_share"] == 1.0
        and report["reward"]["mean"] == 0.5
        and report["reward"]["std"] == 0
    )
    assert any("same reward 0.5" in w and "no signal" in w for w in report["warnings"]), report["warnings"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"hp": {"group_size": 0}}, "method.reinforcement.hyperparameters.group_size"),
        (
            {"hp": {"learning_rate_multiplier": -1}},
            "method.reinforcement.hyperparameters.learning_rate_multiplier",
        ),
        ({"model": "no-such-model"}, "model"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"prompts": 0}, "prompts"),
        ({"timeout_s": 601}, "timeout_s"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(served, key, training, change, param):
    change = dict(change)
    payload = body(change.pop("training_file", training), **change)
    answer = served.http(key).post("/v1/fine_tuning/preflights", json=payload)
    assert 400 <= answer.status_code < 500 and answer.json()["error"]["param"] == param, answer.text


def test_preflight_goes_to_the_queue_of_the_jobs_device_and_fails_when_none_takes_it(served, key, training):
    payload = body(training, hp={"device": "cuda"}, timeout_s=10)
    run = served.http(key).post("/v1/fine_tuning/preflights", json=payload).json()
    assert run["queue"] == "cuda" and run["status"] == "queued"  # the worker consumes only cpu
    run = finished(served, key, run["id"])  # bounded: timeout_s and the grace (1 s here) later, it has failed
    assert run["status"] == "failed" and run["error"]["code"] == "preflight_timeout" and run["report"] is None
    assert run["finished_at"] - run["created_at"] <= 10 + 1 + 2


def rapid(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "rapid_cli.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_preflight_prints_a_report_and_json(served, key, training):
    env = {**served.env, "RAPID_BASE_URL": served.base_url, "RAPID_API_KEY": key}
    hp = [
        f for k, v in tiny_hyperparameters(torch_threads=1).items() for f in ("--hp", f"{k}={json.dumps(v)}")
    ]
    common = [
        "jobs",
        "preflight",
        "-t",
        training,
        "-m",
        "tiny-random",
        "--prompts",
        "2",
        "--interval",
        "0.3",
        *hp,
    ]
    text = rapid(env, *common, "-g", "python:" + str(_constant_grader(served)))
    assert text.returncode == 0, text.stderr + served.logs()
    assert "2 prompts x 2 samples of tiny-random on queue cpu" in text.stdout
    assert (
        "100% of groups have identical rewards" in text.stdout
        and "warning: Every one of the 4" in text.stdout
    )
    as_json = rapid(env, *common, "-g", "numeric:{{item.answer}}", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["report"]["samples"] == 4
    bad = rapid(env, *common, "-g", "numeric:{{item.answer}}", "--hp", "group_size=0")
    assert bad.returncode == 1 and "group_size" in bad.stderr and "HTTP 400" in bad.stderr


def _constant_grader(served: Service):
    path = served.workdir / "constant.py"
    path.write_text(CONSTANT["source"])
    return path
