"""A Hugging Face id through the live service (``rapid serve``: uvicorn + a Celery worker, SQLite), with
the hub a local fake over real HTTP: the API checks the id's shape without a request, the worker
downloads once and reports it as job events, the next job uses the cache without a request."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest
from service_harness import GRADER, Service, arithmetic_jsonl, service_env, tiny_hyperparameters, wait_for_job

from tests.fake_hub import FakeHub

pytestmark = pytest.mark.integration
REPO_ID = "fake-org/tiny-llama"


@pytest.fixture(scope="module")
def hub(tiny_model):
    from rapid_core.models import ensure_tiny_model

    fake = FakeHub()
    fake.add_directory(REPO_ID, Path(ensure_tiny_model()), {"pytorch_model.bin": b"\0" * 2_000_000})
    fake.url = fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, hub):
    work = tmp_path_factory.mktemp("hub-service")
    env = service_env(work)
    env.pop("HF_HUB_OFFLINE")  # unset: online, huggingface_hub's default
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(work / "hf")}
    svc = Service(env, work)
    try:
        svc.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield svc
    finally:
        svc.stop()


def create_job(client: openai.OpenAI, file_id: str, model: str):
    method = {
        "type": "reinforcement",
        "reinforcement": {"grader": GRADER, "hyperparameters": tiny_hyperparameters(rounds=1)},
    }
    return client.fine_tuning.jobs.create(model=model, training_file=file_id, seed=1, method=method)


def messages(client: openai.OpenAI, job_id: str) -> list[str]:
    return [e.message for e in reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)]


def test_a_hub_model_downloads_once_with_progress_events_and_trains(service, hub, tmp_path):
    client = service.client(service.create_key("hub"))
    upload = client.files.create(
        file=arithmetic_jsonl(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune"
    )

    with pytest.raises(openai.BadRequestError) as refused:
        create_job(client, upload.id, "fake-org/tiny llama")
    error = refused.value.body
    assert (
        error["param"] == "model"
        and "'fake-org/tiny llama' is not a valid Hugging Face model id" in error["message"]
    )
    assert hub.requests == []  # the API validated the shape alone

    first = wait_for_job(client, create_job(client, upload.id, REPO_ID).id, service)
    assert first.status == "succeeded", service.logs()
    assert "pytorch_model.bin" not in hub.downloads() and "model.safetensors" in hub.downloads()
    events = messages(client, first.id)
    start = events.index(f"Downloading {REPO_ID}: 6 files, 16 MB")
    done = next(
        i for i, m in enumerate(events) if re.fullmatch(rf"Downloaded {REPO_ID} \(16 MB\) in \d+ s", m)
    )
    assert start < done and any(
        re.fullmatch(rf"Downloading {REPO_ID}: \d+ / 16 MB", m) for m in events[start:done]
    )
    assert all(not m.startswith("Downloading") for m in events[done:])

    seen = len(hub.requests)
    second = wait_for_job(client, create_job(client, upload.id, REPO_ID).id, service)
    assert second.status == "succeeded", service.logs()
    assert f"Using the cached copy of {REPO_ID} (commit {hub.repos[REPO_ID].sha[:12]})" in messages(
        client, second.id
    )
    assert len(hub.requests) == seen  # neither the download step nor the trainer's loading asked the hub


def test_a_well_shaped_id_missing_on_the_hub_fails_the_job_naming_it(service, tmp_path):
    client = service.client(service.create_key("missing"))
    upload = client.files.create(
        file=arithmetic_jsonl(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune"
    )
    job = wait_for_job(client, create_job(client, upload.id, "fake-org/missing").id, service)
    assert job.status == "failed"
    assert "'fake-org/missing' was not found on the Hugging Face Hub" in job.error.message
    assert job.error.code == "invalid_job"
