"""Bad bytes against a live API on PostgreSQL, which refuses NUL in text and non-finite JSON numbers:
each is a 400 naming the field, the keep-alive connection survives it, and the metadata filter and
cursors behave as on SQLite."""

from __future__ import annotations

import json

import pytest
from service_harness import Service, postgres_database, redis_prefix, service_env

from store.migrate import upgrade

pytestmark = pytest.mark.integration
GRADER = {
    "type": "string_check",
    "name": "g",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}
ROW = {"messages": [{"role": "user", "content": "Sentiment of 'great'?"}], "label": "positive"}


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    work = tmp_path_factory.mktemp("pg-bytes")
    with postgres_database() as url, redis_prefix() as prefix:
        upgrade(url)
        env = service_env(
            work,
            database_url=url,
            broker_url="redis://127.0.0.1:6379/0",
            broker_key_prefix=prefix,
            artifacts_dir=work / "artifacts",
            runs_dir=work / "runs",
        )
        service = Service(env, work)
        try:
            service.start_api()
            with service.http(service.create_key("bytes")) as client:
                yield client
        finally:
            service.stop()


def job_body(file_id: str, **extra) -> dict:
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {"rounds": 1}}}
    return {"model": "tiny-random", "training_file": file_id, "method": method, **extra}


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_bad_bytes_are_400s_naming_the_field_on_postgres(http):
    file_id = (
        http.post(
            "/v1/files",
            files={"file": ("t.jsonl", (json.dumps(ROW) + "\n").encode())},
            data={"purpose": "fine-tune"},
        )
        .raise_for_status()
        .json()["id"]
    )
    for path, param in (
        ("/v1/fine_tuning/jobs/ftjob-%00", "fine_tuning_job_id"),
        ("/v1/files/file-%00", "file_id"),
        ("/v1/fine_tuning/jobs?after=%00", "after"),
        ("/v1/files?after=x%00", "after"),
    ):
        assert error_of(http.get(path))["param"] == param
    for field, value in (
        ("suffix", "a\x00b"),
        ("metadata", {"k": "\x00"}),
        ("training_file", file_id + "\x00"),
    ):
        assert error_of(http.post("/v1/fine_tuning/jobs", json=job_body(file_id, **{field: value})))[
            "param"
        ].startswith(field)
    body = json.dumps(job_body(file_id)).replace('"rounds": 1', '"lora_alpha": Infinity')
    error = error_of(
        http.post("/v1/fine_tuning/jobs", content=body, headers={"content-type": "application/json"})
    )
    assert error["param"] == "method.reinforcement.hyperparameters.lora_alpha"
    assert error_of(http.get(f"/v1/fine_tuning/jobs?limit={10**30}"))["param"] == "limit"
    assert http.get("/v1/fine_tuning/jobs").json()["data"] == []  # nothing was written
    assert http.get("/healthz").status_code == 200  # the same keep-alive connection still answers


def test_metadata_filter_and_cursors_on_postgres(http):
    file_id = (
        http.post(
            "/v1/files",
            files={"file": ("t.jsonl", (json.dumps(ROW) + "\n").encode())},
            data={"purpose": "fine-tune"},
        )
        .raise_for_status()
        .json()["id"]
    )
    odd = {'we"ird.key': "it's"}
    ids = [
        http.post("/v1/fine_tuning/jobs", json=job_body(file_id, metadata=meta))
        .raise_for_status()
        .json()["id"]
        for meta in (odd, {"team": "a"}, None)
    ]
    listed = http.get("/v1/fine_tuning/jobs", params={'metadata[we"ird.key]': "it's"}).json()["data"]
    assert [j["id"] for j in listed] == [ids[0]]
    assert [
        j["id"] for j in http.get("/v1/fine_tuning/jobs", params={"metadata": "null"}).json()["data"]
    ] == [ids[2]]
    page = http.get("/v1/fine_tuning/jobs", params={"limit": 1, "after": ids[2]}).json()
    assert [j["id"] for j in page["data"]] == [ids[1]] and page["has_more"] and page["first_id"] == ids[1]
    assert error_of(http.get("/v1/fine_tuning/jobs", params={"after": "ftjob-gone"}), 404)["param"] == "after"
