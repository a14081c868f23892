"""Every error leaves the API in OpenAI's shape, from the one mapping in api/errors.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def app_and_key(api_client):
    return api_client


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_missing_key_is_401(app_and_key):
    response = app_and_key.get("/v1/fine_tuning/jobs", headers={"Authorization": ""})
    assert response.status_code == 401 and error_of(response)["type"] == "authentication_error"


def test_unknown_job_is_404_naming_it(app_and_key):
    response = app_and_key.get("/v1/fine_tuning/jobs/ftjob-nope")
    assert response.status_code == 404 and "ftjob-nope" in error_of(response)["message"]


def test_body_validation_is_400_naming_the_param(app_and_key):
    response = app_and_key.post("/v1/fine_tuning/jobs", json={"training_file": "file-x"})
    assert response.status_code == 400 and error_of(response)["param"] == "model"


def test_unsupported_method_type_is_400(app_and_key):
    response = app_and_key.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-random",
            "training_file": "f",
            "method": {"type": "supervised", "supervised": {}},
        },
    )
    assert response.status_code == 400 and error_of(response)["param"].startswith("method")


def test_unknown_route_is_404_in_the_same_shape(app_and_key):
    assert error_of(app_and_key.get("/v1/nowhere"))["code"] == "not_found"


def test_health_and_readiness(app_and_key):
    assert app_and_key.get("/healthz").json() == {"status": "ok"}
    assert app_and_key.get("/readyz").json()["checks"] == {"database": True, "broker": True}
