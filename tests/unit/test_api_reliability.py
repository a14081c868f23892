"""The API's side of reliability on a real SQLite store and filesystem broker: idempotent retries,
one winner per status change, a job committed with its outbox row and then published, and 503 with
Retry-After (never 500) while the database is down."""

from __future__ import annotations

import json
import socket

from fastapi.testclient import TestClient

from store.broker import job_of_task
from store.repos import Events, Outboxes

GOOD = '{"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}\n'
GRADER = {"type": "numeric", "reference": "{{item.answer}}"}


def upload(client, text: str = GOOD * 4, **headers):
    return client.post(
        "/v1/files",
        files={"file": ("t.jsonl", text.encode())},
        data={"purpose": "fine-tune"},
        headers=headers,
    )


def job_body(file_id: str, seed: int = 1) -> dict:
    return {
        "model": "tiny-random",
        "training_file": file_id,
        "seed": seed,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": GRADER, "hyperparameters": {"rounds": 1}},
        },
    }


def store_of(client):
    return client.app.state.runtime


def queued_messages(client) -> list[str]:
    """Job ids of the messages waiting in the filesystem broker."""
    folder = store_of(client).settings.broker_dir / "queue"
    return [job_of_task(json.loads(p.read_bytes())["headers"]["id"]) for p in sorted(folder.glob("*.msg"))]


def events_of(client, job_id: str) -> list[str]:
    with store_of(client).sessions() as s:
        return [e.message for e in Events(s).page(job_id, None, 100)[0]][::-1]


def test_a_retried_create_with_the_same_idempotency_key_returns_the_same_job(api_client):
    file_id = upload(api_client).json()["id"]
    first = api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id), headers={"Idempotency-Key": "k1"})
    again = api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id), headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    other = api_client.post(
        "/v1/fine_tuning/jobs", json=job_body(file_id, seed=2), headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 422, other.text
    assert (
        other.json()["error"]["code"] == "idempotency_key_reused"
        and first.json()["id"] in other.json()["error"]["message"]
    )
    assert len(api_client.get("/v1/fine_tuning/jobs").json()["data"]) == 1
    assert queued_messages(api_client) == [first.json()["id"]]  # published once
    api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id), headers={"Idempotency-Key": "k2"})
    api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id))  # no key: a new job each time
    assert len(api_client.get("/v1/fine_tuning/jobs").json()["data"]) == 3


def test_a_retried_upload_with_the_same_idempotency_key_returns_the_same_file(api_client):
    first = upload(api_client, **{"Idempotency-Key": "u1"})
    again = upload(api_client, **{"Idempotency-Key": "u1"})
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    changed = upload(api_client, GOOD * 5, **{"Idempotency-Key": "u1"})
    assert changed.status_code == 422 and changed.json()["error"]["param"] == "Idempotency-Key"
    assert [f["id"] for f in api_client.get("/v1/files").json()["data"]] == [first.json()["id"]]
    artifacts = store_of(api_client).settings.artifacts_dir / "files"
    assert len(list(artifacts.iterdir())) == 1  # the retry stored nothing


def test_a_created_job_commits_with_its_outbox_row_which_is_gone_once_published(api_client):
    file_id = upload(api_client).json()["id"]
    job = api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id)).json()
    assert job["status"] == "queued" and queued_messages(api_client) == [job["id"]]
    with store_of(api_client).sessions() as s:
        assert Outboxes(s).pending() == []


def test_cancel_twice_answers_once_and_writes_one_event(api_client):
    file_id = upload(api_client).json()["id"]
    job_id = api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id)).json()["id"]
    first = api_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    second = api_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert second.status_code == 400 and "already been cancelled" in second.json()["error"]["message"]
    assert events_of(api_client, job_id).count("Job cancelled by request") == 1


def test_pause_resume_then_cancel_and_a_cancelled_job_never_resumes(api_client):
    file_id = upload(api_client).json()["id"]
    job_id = api_client.post("/v1/fine_tuning/jobs", json=job_body(file_id)).json()["id"]
    url = f"/v1/fine_tuning/jobs/{job_id}"
    assert api_client.post(f"{url}/pause").json()["status"] == "paused"
    assert api_client.post(f"{url}/pause").status_code == 400
    assert api_client.post(f"{url}/resume").json()["status"] == "queued"
    assert api_client.post(f"{url}/resume").status_code == 400
    assert queued_messages(api_client) == [job_id, job_id]  # the resume published it again
    assert api_client.post(f"{url}/cancel").json()["status"] == "cancelled"
    refused = api_client.post(f"{url}/resume")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "job_not_paused"
    assert api_client.get(url).json()["status"] == "cancelled"


def test_every_route_answers_503_with_retry_after_while_the_database_is_down(tmp_path):
    from api.app import create_app
    from store.settings import Settings

    with socket.socket() as sock:  # a port nobody listens on: PostgreSQL is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{port}/rapid",
        broker_dir=tmp_path / "b",
        artifacts_dir=tmp_path / "a",
        runs_dir=tmp_path / "r",
    )
    with TestClient(create_app(settings), headers={"Authorization": "Bearer rk-any"}) as client:
        calls = [
            client.get("/v1/files"),
            client.get("/v1/fine_tuning/jobs/ftjob-x"),
            upload(client),
            client.post("/v1/fine_tuning/jobs", json=job_body("file-x")),
            client.post("/v1/fine_tuning/jobs/ftjob-x/cancel"),
            client.get("/metrics"),
            client.get("/readyz"),
        ]
        for response in calls:
            assert response.status_code == 503, (response.request.url, response.text)
            assert int(response.headers["Retry-After"]) > 0
        assert calls[0].json()["error"]["code"] == "database_unavailable"
        assert "SELECT" not in calls[0].text
        assert client.get("/healthz").status_code == 200  # alive, just not ready
