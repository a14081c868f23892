"""The happy path on the embedded defaults: ``rapid serve`` with SQLite and the filesystem broker."""

from __future__ import annotations

import pytest
from adapter_check import load_downloaded_adapter
from service_harness import Service, arithmetic_jsonl, create_tiny_job, service_env, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    work = tmp_path_factory.mktemp("embedded")
    service = Service(service_env(work), work)  # no RAPID_* settings: every default
    try:
        service.start_api("-m", "api.cli", "serve", "--port", "{port}")
        yield service
    finally:
        service.stop()


def test_embedded_service_runs_a_tiny_job_to_success(embedded, tmp_path):
    key = embedded.create_key("solo")
    client = embedded.client(key)
    upload = client.files.create(
        file=arithmetic_jsonl(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune"
    )
    assert upload.status == "processed" and upload.purpose == "fine-tune"
    assert client.files.content(upload.id).text.count("\n") == 40

    job = wait_for_job(client, create_tiny_job(client, upload.id).id, embedded)
    assert job.status == "succeeded", embedded.logs()
    assert (embedded.workdir / "rapid-data" / "rapid.db").is_file()  # the embedded defaults were used
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert {c.step_number for c in checkpoints} == {2, 4, 6}
    model = load_downloaded_adapter(
        embedded.http(key), f"/v1/fine_tuning/jobs/{job.id}/adapter", tmp_path / "a"
    )
    assert model.peft_config["default"].r == 4
    ready = embedded.http(key).get("/readyz").json()
    assert ready["checks"] == {"database": True, "broker": True}
    assert client.files.delete(upload.id).deleted  # the job is done with it
    assert client.files.list().data == []
