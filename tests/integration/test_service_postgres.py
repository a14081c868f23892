"""The service on PostgreSQL and Redis with real Celery workers, driven by the official openai client."""

from __future__ import annotations

import os
import signal

import httpx
import openai
import pytest
from adapter_check import load_downloaded_adapter
from service_harness import (
    GRADER,
    Service,
    arithmetic_jsonl,
    create_tiny_job,
    postgres_database,
    redis_prefix,
    service_env,
    wait_for_job,
    wait_until,
)
from sqlalchemy import create_engine, func, select

from store.broker import enqueue_job, make_celery
from store.migrate import upgrade
from store.models import Event, File, Job
from store.settings import Settings

pytestmark = pytest.mark.integration
MAX_FILE_BYTES = 200_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("pg-stack")
    with postgres_database() as url, redis_prefix() as prefix:
        upgrade(url)
        env = service_env(
            work,
            database_url=url,
            broker_url="redis://127.0.0.1:6379/0",
            broker_key_prefix=prefix,
            artifacts_dir=work / "artifacts",
            runs_dir=work / "runs",
            lease_seconds=6,
            max_file_bytes=MAX_FILE_BYTES,
        )
        service = Service(env, work)
        try:
            service.start_api()
            service.start_worker()
            service.database_url, service.broker_prefix = url, prefix
            yield service
        finally:
            service.stop()


@pytest.fixture(scope="module")
def key(stack) -> str:
    return stack.create_key("alpha")


@pytest.fixture(scope="module")
def client(stack, key):
    return stack.client(key)


@pytest.fixture(scope="module")
def training_file(client, tmp_path_factory):
    path = arithmetic_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl")
    return client.files.create(file=path.open("rb"), purpose="fine-tune")


@pytest.fixture(scope="module")
def finished_job(stack, client, training_file):
    job = create_tiny_job(client, training_file.id)
    return wait_for_job(client, job.id, stack)


def count_rows(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            m.__tablename__: conn.scalar(select(func.count()).select_from(m)) for m in (File, Job, Event)
        }
    engine.dispose()
    return counts


def test_ready_and_prometheus_metrics(stack):
    ready = httpx.get(f"{stack.base_url}/readyz").json()
    assert ready == {"status": "ready", "checks": {"database": True, "broker": True}}
    assert "rapid_jobs{" in httpx.get(f"{stack.base_url}/metrics").text


def test_tiny_job_succeeds_with_metrics_checkpoints_and_adapter(
    stack, client, key, training_file, finished_job, tmp_path
):
    job = finished_job
    assert job.status == "succeeded", stack.logs()
    assert job.finished_at and job.fine_tuned_model and job.trained_tokens and job.trained_tokens > 0
    assert job.method.reinforcement.hyperparameters.group_size == 2
    assert [j.id for j in client.fine_tuning.jobs.list(limit=10)] == [job.id]

    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[0] == "The job has successfully completed"
    assert any(m.startswith("Round 2:") for m in messages)
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    by_round = sorted(c.step_number for c in checkpoints if not c.model_extra.get("final"))
    assert by_round == [2, 4, 6]  # one per round, U = 2 steps each
    assert checkpoints[0].metrics.step == 6

    http = stack.http(key)
    steps = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "step"}).json()["data"]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6]
    for name in (
        "loss",
        "grad_norm",
        "lr",
        "staleness",
        "w_mean",
        "w_min",
        "w_max",
        "clip_frac",
        "ess",
        "approx_kl",
        "entropy",
    ):
        assert name in steps[0]["metrics"], name
    one = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "step", "step": 3}).json()[
        "data"
    ]
    assert [m["step"] for m in one] == [3]
    rounds = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "round"}).json()["data"]
    assert [m["round"] for m in rounds] == [0, 1, 2] and "reward_mean" in rounds[0]["metrics"]
    evals = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "eval"}).json()["data"]
    assert [m["phase"] for m in evals] == ["before", "after"] and "pass@1" in evals[0]["metrics"]

    model = load_downloaded_adapter(http, f"/v1/fine_tuning/jobs/{job.id}/adapter", tmp_path / "final")
    assert model.peft_config["default"].r == 4
    middle = next(c for c in checkpoints if c.step_number == 4)
    load_downloaded_adapter(http, middle.model_extra["adapter_url"], tmp_path / "middle")


def test_worker_killed_mid_job_is_replaced_and_resumes_from_checkpoint(
    stack, client, training_file, finished_job
):
    job = create_tiny_job(client, training_file.id, rounds=16, eval_problems=0)
    first = stack.workers[-1]
    wait_until(
        lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 240, "a first checkpoint", stack, 0.2
    )
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no goodbye
    first.wait()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    stack.start_worker()

    done = wait_for_job(client, job.id, stack, timeout=400)
    assert done.status == "succeeded", stack.logs()
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
    assert any("stopped answering; job requeued" in m for m in messages), messages
    resumed = [m for m in messages if m.startswith("Training resumed from the checkpoint of round")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 1, messages
    http = stack.http(client.api_key)
    rounds = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "round"}).json()["data"]
    assert sorted(m["round"] for m in rounds) == list(range(16))  # redone rounds replaced, none lost
    steps = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"kind": "step"}).json()["data"]
    assert sorted(m["step"] for m in steps) == list(range(1, 33))


def test_second_delivery_of_a_running_job_exits_while_its_worker_lives(
    stack, client, training_file, finished_job
):
    second = stack.start_worker()  # idle beside the one that will run the job
    job = create_tiny_job(client, training_file.id, rounds=500, eval_problems=0)
    wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 240, "a checkpoint", stack)
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", broker_key_prefix=stack.broker_prefix)
    enqueue_job(make_celery(settings), job.id, "cpu")  # as if the broker redelivered it

    def ignored():
        events = client.fine_tuning.jobs.list_events(job.id, limit=100)
        return any(e.message.startswith("A second delivery of this job was ignored") for e in events)

    wait_until(ignored, 120, "the idle worker to see the live lease", stack)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
    assert sum(m.startswith("Job running on worker") for m in messages) == 1
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    os.killpg(second.pid, signal.SIGTERM)
    second.wait(60)
    stack.workers.remove(second)


def test_cancel_running_job_keeps_its_records(stack, client, training_file, finished_job):
    job = create_tiny_job(client, training_file.id, rounds=200, eval_problems=0)
    wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 240, "a checkpoint", stack)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"

    def stopped():
        return any(
            e.message.startswith("Training stopped")
            for e in client.fine_tuning.jobs.list_events(job.id, limit=50)
        )

    wait_until(stopped, 60, "the worker to stop the job", stack)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data  # the last checkpoint stays


def test_pause_then_resume_continues_to_success(stack, client, training_file, finished_job):
    job = create_tiny_job(client, training_file.id, rounds=12, eval_problems=0)
    wait_until(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, 240, "a checkpoint", stack)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"

    def resumed():
        try:
            return client.fine_tuning.jobs.resume(job.id)
        except openai.BadRequestError as err:  # still stopping at the next step
            assert "still stopping" in err.message
            return None

    assert wait_until(resumed, 60, "the pause to take effect", stack).status == "queued"
    done = wait_for_job(client, job.id, stack)
    assert done.status == "succeeded", stack.logs()
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
    assert any(m.startswith("Training resumed from the checkpoint of round") for m in messages)


def test_second_key_cannot_see_first_keys_objects(stack, client, training_file, finished_job):
    other = stack.client(stack.create_key("beta"))
    assert other.fine_tuning.jobs.list().data == [] and other.files.list().data == []
    calls = [
        lambda: other.files.retrieve(training_file.id),
        lambda: other.files.content(training_file.id),
        lambda: other.files.delete(training_file.id),
        lambda: other.fine_tuning.jobs.retrieve(finished_job.id),
        lambda: other.fine_tuning.jobs.cancel(finished_job.id),
        lambda: other.fine_tuning.jobs.list_events(finished_job.id),
        lambda: other.fine_tuning.jobs.checkpoints.list(finished_job.id),
        lambda: other.fine_tuning.jobs.create(
            model="tiny-random",
            training_file=training_file.id,
            method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        ),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    http = stack.http(other.api_key)
    for path in ("adapter", "metrics"):
        assert http.get(f"/v1/fine_tuning/jobs/{finished_job.id}/{path}").status_code == 404
    ckpt = client.fine_tuning.jobs.checkpoints.list(finished_job.id).data[0]
    assert http.get(ckpt.model_extra["adapter_url"]).status_code == 404
    assert client.files.retrieve(training_file.id).id == training_file.id  # the owner still can


def _job_request(file_id: str, model="tiny-random", grader=GRADER, **hyper) -> dict:
    return {
        "model": model,
        "training_file": file_id,
        "method": {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}},
    }


BAD_JOBS = [
    ("missing training file", dict(file_id="file-doesnotexist"), 404, "file-doesnotexist", "training_file"),
    ("unknown model", dict(model="no-such-model"), 400, "no-such-model", "model"),
    (
        "unknown grader",
        dict(grader={"type": "crystal_ball"}),
        400,
        "'crystal_ball'",
        "method.reinforcement.grader.type",
    ),
    (
        "bad grader spec",
        dict(grader={"type": "numeric", "tolerance": -1}),
        400,
        "tolerance",
        "method.reinforcement.grader.tolerance",
    ),
    (
        "negative group size",
        dict(group_size=-2),
        400,
        "group_size",
        "method.reinforcement.hyperparameters.group_size",
    ),
    (
        "absurd group size",
        dict(group_size=10**7),
        400,
        "limit",
        "method.reinforcement.hyperparameters.group_size",
    ),
    (
        "absurd learning rate",
        dict(learning_rate=50.0),
        400,
        "learning_rate",
        "method.reinforcement.hyperparameters.learning_rate",
    ),
    (
        "negative lr multiplier",
        dict(learning_rate_multiplier=-1),
        400,
        "learning_rate_multiplier",
        "method.reinforcement.hyperparameters.learning_rate_multiplier",
    ),
    (
        "unknown hyperparameter",
        dict(warp_speed=9),
        400,
        "warp_speed",
        "method.reinforcement.hyperparameters.warp_speed",
    ),
    (
        "reserved hyperparameter",
        dict(output_dir="/etc"),
        400,
        "output_dir",
        "method.reinforcement.hyperparameters.output_dir",
    ),
    (
        "inconsistent shapes",
        dict(prompts_per_round=3, group_size=2, mini_batch_size=4),
        400,
        "multiple",
        "method.reinforcement.hyperparameters.mini_batch_size",
    ),
]


@pytest.mark.parametrize("case,change,status,needle,param", BAD_JOBS, ids=[c[0] for c in BAD_JOBS])
def test_bad_job_request_is_refused_without_rows(
    stack, key, training_file, case, change, status, needle, param
):
    change = dict(change)
    file_id = change.pop("file_id", training_file.id)
    request = _job_request(
        file_id, **{k: change.pop(k) for k in ("model", "grader") if k in change}, **change
    )
    before = count_rows(stack.database_url)
    response = stack.http(key).post("/v1/fine_tuning/jobs", json=request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    assert count_rows(stack.database_url) == before


def test_bad_uploads_are_refused_naming_the_problem(stack, key, tmp_path):
    http = stack.http(key)
    before = count_rows(stack.database_url)
    good = '{"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}\n'
    cases = [
        (good + good + "{not json\n", 400, "Line 3"),
        (good + "[1, 2]\n", 400, "Line 2 is not a JSON object"),
        (good + '{"answer": "3"}\n', 400, "Line 2: 'messages'"),
        ("", 400, "empty"),
        (good * (MAX_FILE_BYTES // len(good) + 10), 413, f"limit of {MAX_FILE_BYTES} bytes"),
    ]
    for text, status, needle in cases:
        response = http.post(
            "/v1/files", files={"file": ("t.jsonl", text.encode())}, data={"purpose": "fine-tune"}
        )
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]["message"]
    response = http.post(
        "/v1/files", files={"file": ("t.jsonl", good.encode())}, data={"purpose": "assistants"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
    assert count_rows(stack.database_url) == before


def test_cancel_of_finished_job_is_refused(stack, client, finished_job):
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.cancel(finished_job.id)
    assert "already succeeded" in err.value.message
    assert client.fine_tuning.jobs.retrieve(finished_job.id).status == "succeeded"


def test_requests_without_a_valid_key_are_refused(stack):
    with pytest.raises(openai.AuthenticationError):
        stack.client("rk-wrong").fine_tuning.jobs.list()


def test_auto_batch_ratio_writes_each_rounds_decision_as_an_event(stack, client, training_file):
    job = wait_for_job(
        client, create_tiny_job(client, training_file.id, batch_ratio_control="auto").id, stack
    )
    assert job.status == "succeeded", stack.logs()
    assert job.method.reinforcement.hyperparameters.model_extra["batch_ratio_control"] == "auto"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)][::-1]
    decisions = [m for m in messages if ": batch ratio U=" in m]
    assert len(decisions) == 3 and decisions[0] == "Round 0: batch ratio U=2: start at U=2", decisions
    # The checkpoints' step numbers follow the U each event names.
    ratios = [int(m.split("U=")[1].split(":")[0]) for m in decisions]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    steps = sorted(c.step_number for c in checkpoints if not c.model_extra.get("final"))
    assert steps == [sum(ratios[: k + 1]) for k in range(3)]
