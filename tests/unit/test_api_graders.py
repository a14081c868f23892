"""/v1/fine_tuning/alpha/graders validates and runs graders; job creation checks files against them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

VALIDATE = "/v1/fine_tuning/alpha/graders/validate"
RUN = "/v1/fine_tuning/alpha/graders/run"
STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
PYTHON_SOURCE = """
def grade(sample, item):
    return 1.0 if sample["output_text"].strip() == str(item["answer"]) else 0.25
"""


@pytest.fixture
def client(api_client):
    return api_client


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_validate_returns_a_valid_grader_unchanged(client):
    response = client.post(VALIDATE, json={"grader": STRING_CHECK})
    assert response.status_code == 200 and response.json() == {"grader": STRING_CHECK}


def test_validate_needs_an_api_key(client):
    assert error_of(client.post(VALIDATE, json={"grader": STRING_CHECK}, headers={"Authorization": ""}), 401)


def test_validate_refuses_an_unknown_type_listing_the_known_ones(client):
    error = error_of(client.post(VALIDATE, json={"grader": {"type": "crystal_ball"}}))
    assert "'crystal_ball'" in error["message"] and "string_check" in error["message"]
    assert error["param"] == "grader.type" and error["code"] == "invalid_grader"


@pytest.mark.parametrize(
    "formula,what",
    [
        ("a + __import__('os').getpid()", "may be called"),
        ("a ** 2", "write powers with ^"),
        ("a % 2", "Mod"),
        ("a + c", "'c'"),
        ("a +", "formula"),
    ],
)
def test_validate_refuses_a_multi_formula_outside_the_safe_grammar(client, formula, what):
    grader = {"type": "multi", "graders": {"a": STRING_CHECK, "b": STRING_CHECK}, "calculate_output": formula}
    error = error_of(client.post(VALIDATE, json={"grader": grader}))
    assert "calculate_output" in error["message"] and what in error["message"]


def test_validate_refuses_score_model_for_now(client):
    grader = {"type": "score_model", "name": "judge", "model": "gpt-4o", "input": []}
    assert "not supported" in error_of(client.post(VALIDATE, json={"grader": grader}))["message"]


def test_run_string_check_scores_and_classifies(client):
    hit = client.post(
        RUN, json={"grader": STRING_CHECK, "model_sample": "42", "item": {"answer": "42"}}
    ).json()
    miss = client.post(
        RUN, json={"grader": STRING_CHECK, "model_sample": "41", "item": {"answer": "42"}}
    ).json()
    assert (hit["reward"], hit["metadata"]["status"]) == (1.0, "ok")
    assert (miss["reward"], miss["metadata"]["status"]) == (0.0, "wrong")
    assert hit["metadata"]["type"] == "string_check" and hit["metadata"]["name"] == "exact"
    assert not any(v for k, v in hit["metadata"]["errors"].items())


def test_run_numeric_reads_the_final_number(client):
    grader = {"type": "numeric", "reference": "{{item.answer}}"}
    body = {"grader": grader, "model_sample": "3 + 4 = 7, so the answer is 7", "item": {"answer": "7"}}
    assert client.post(RUN, json=body).json()["reward"] == 1.0


def test_run_list_form_scores_each_sample(client):
    body = {"grader": STRING_CHECK, "model_sample": ["a", "b"], "item": [{"answer": "a"}, {"answer": "a"}]}
    data = client.post(RUN, json=body).json()["data"]
    assert [r["reward"] for r in data] == [1.0, 0.0]


def test_run_refuses_an_item_without_a_field_the_grader_reads(client):
    error = error_of(
        client.post(RUN, json={"grader": STRING_CHECK, "model_sample": "x", "item": {"other": 1}})
    )
    assert "'answer'" in error["message"] and error["param"] == "item"


def test_run_python_grader_scores_a_sample_in_the_sandbox(client):
    grader = {"type": "python", "name": "mine", "source": PYTHON_SOURCE}
    ok = client.post(RUN, json={"grader": grader, "model_sample": " 12 ", "item": {"answer": 12}}).json()
    partial = client.post(RUN, json={"grader": grader, "model_sample": "13", "item": {"answer": 12}}).json()
    assert (ok["reward"], ok["metadata"]["status"]) == (1.0, "ok")
    assert (partial["reward"], partial["metadata"]["status"]) == (0.25, "wrong")


def test_run_python_grader_that_raises_is_a_runtime_error_not_a_500(client):
    grader = {"type": "python", "source": "def grade(sample, item):\n    raise ValueError('no luck')\n"}
    result = client.post(RUN, json={"grader": grader, "model_sample": "x", "item": {}}).json()
    assert result["reward"] == 0.0 and result["metadata"]["status"] == "error"
    errors = result["metadata"]["errors"]
    assert (
        errors["python_grader_runtime_error"] and "no luck" in errors["python_grader_runtime_error_details"]
    )


def test_run_multi_reports_each_part(client):
    grader = {
        "type": "multi",
        "calculate_output": "0.5 * exact + 0.5 * loose",
        "graders": {"exact": STRING_CHECK, "loose": {**STRING_CHECK, "operation": "ilike"}},
    }
    result = client.post(
        RUN, json={"grader": grader, "model_sample": "The answer: ABC", "item": {"answer": "abc"}}
    )
    body = result.json()
    assert body["reward"] == 0.5 and body["sub_rewards"] == {"exact": 0.0, "loose": 1.0}
    assert body["metadata"]["sub_metadata"]["loose"]["status"] == "ok"


# --- job creation checks the files against the grader ---------------------------------------------


def upload(client, rows: list[dict]) -> str:
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = client.post("/v1/files", files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def create_job(client, training: str, validation: str | None = None):
    method = {"type": "reinforcement", "reinforcement": {"grader": STRING_CHECK}}
    body = {
        "model": "tiny-random",
        "training_file": training,
        "validation_file": validation,
        "method": method,
    }
    return client.post("/v1/fine_tuning/jobs", json=body)


def row(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "1+1?"}], **fields}


def test_job_refused_naming_the_first_line_that_lacks_a_grader_field(client):
    training = upload(client, [row(answer="2"), row(answer="2"), row(solution="2"), row()])
    error = error_of(create_job(client, training))
    assert error["param"] == "training_file" and error["code"] == "missing_grader_fields"
    assert "line 3" in error["message"] and "'answer'" in error["message"] and training in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []  # no job row was written


def test_job_refused_for_a_validation_file_that_lacks_a_grader_field(client):
    training = upload(client, [row(answer="2")])
    validation = upload(client, [row(answer="2"), row()])
    error = error_of(create_job(client, training, validation))
    assert error["param"] == "validation_file" and "line 2" in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_grading_through_the_api_does_not_load_torch():
    code = (
        "import sys\n"
        "from api.services.graders import run_grader, validate_grader\n"
        "spec = {'type': 'multi', 'calculate_output': 'm + s', 'graders': {"
        "'m': {'type': 'math'}, 's': {'type': 'text_similarity', 'evaluation_metric': 'fuzzy_match', "
        "'input': '{{sample.output_text}}', 'reference': '{{item.answer}}'}}}\n"
        "validate_grader(spec)\n"
        "run_grader(spec, ['\\\\boxed{1/2}'], [{'answer': '0.5'}])\n"
        "assert 'torch' not in sys.modules, 'torch loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
