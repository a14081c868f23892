"""The request guard and the operator routes, through the app: keys and sizes are checked before
a route runs, and every refusal is in OpenAI's error shape (the live-server figures are in
tests/integration/test_service_security.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from store.db import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.repos import Keys
from store.settings import Settings

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def client(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_dir=tmp_path / "broker",
        artifacts_dir=tmp_path / "artifacts",
        runs_dir=tmp_path / "runs",
        max_request_bytes=4096,
        max_file_bytes=8192,
        metrics_token="scrape-t0ken",
    )
    upgrade(settings.database_url)
    with make_sessionmaker(make_engine(settings))() as s:
        key, secret = Keys(s).create("p")
        s.commit()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        client.key_id = key.id
        client.settings = settings
        yield client


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_wrong_key_is_401_whatever_the_body(client):
    for body in (b"{}", b"x" * 100_000, b"not json"):
        e = error(client.post(JOBS, content=body, headers={"Authorization": "Bearer rk-wrong"}), 401)
        assert (e["type"], e["code"]) == ("authentication_error", "invalid_api_key")


def test_a_body_over_the_limit_is_413_naming_the_limit(client):
    e = error(
        client.post(JOBS, content=b"{" + b" " * 5000 + b"}", headers={"Content-Type": "application/json"}),
        413,
    )
    assert e["code"] == "request_too_large" and "4096" in e["message"]
    e = error(
        client.post("/v1/files", files={"file": ("t.jsonl", b"x" * 9000)}, data={"purpose": "fine-tune"}), 413
    )
    assert (e["param"], e["code"]) == ("file", "file_too_large")


def test_an_upload_without_its_parts_is_400_naming_the_missing_one(client):
    e = error(client.post("/v1/files", files={"file": ("t.jsonl", b"{}\n")}), 400)
    assert (e["param"], e["code"]) == ("purpose", "missing_purpose")
    e = error(client.post("/v1/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"1")}), 400)
    assert (e["param"], e["code"]) == ("file", "missing_file")


def test_a_revoked_key_is_refused_on_the_next_request(client):
    assert client.get("/v1/files").status_code == 200
    with make_sessionmaker(make_engine(client.settings))() as s:
        assert Keys(s).revoke(client.key_id).revoked_at is not None
        s.commit()
        assert Keys(s).revoke("key-none") is None
    assert error(client.get("/v1/files"), 401)["code"] == "invalid_api_key"


def test_metrics_need_the_metrics_token_when_one_is_set(client):
    assert error(client.get("/metrics"), 401)["code"] == "invalid_metrics_token"  # a tenant key is not it
    scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-t0ken"})
    assert scraped.status_code == 200 and "rapid_jobs" in scraped.text


def test_health_answers_without_a_key(client):
    assert client.get("/healthz", headers={"Authorization": ""}).json() == {"status": "ok"}
