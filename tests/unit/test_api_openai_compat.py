"""The API as OpenAI documents it, driven by the official client and by the API reference's own
request bodies; and the bad bytes (NaN, NUL, huge integers, deep JSON) that must be 400s naming the
field, never 500s. docs/openai-compatibility.md lists what each example does here."""

from __future__ import annotations

import json

import openai
import pytest

from store.models import Checkpoint

VALIDATE = "/v1/fine_tuning/alpha/graders/validate"
RUN = "/v1/fine_tuning/alpha/graders/run"
JOBS = "/v1/fine_tuning/jobs"
# API reference, "Validate grader" (request and response).
STRING_CHECK = {
    "type": "string_check",
    "name": "Example string check grader",
    "input": "{{sample.output_text}}",
    "reference": "{{item.label}}",
    "operation": "eq",
}
PYTHON = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
MULTI = {"type": "multi", "graders": {"a": STRING_CHECK}, "calculate_output": "a"}


@pytest.fixture
def client(api_client):
    return api_client


@pytest.fixture
def sdk(client) -> openai.OpenAI:
    """The official client, speaking to the app through the test client's transport."""
    key = client.headers["Authorization"].split()[1]
    return openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=client, max_retries=0)


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def upload(client, rows: list[dict] | None = None) -> str:
    rows = rows or [{"messages": [{"role": "user", "content": "Sentiment of 'great'?"}], "label": "positive"}]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = client.post("/v1/files", files={"file": ("t.jsonl", content)}, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def job_body(training: str, grader: dict | None = None, **extra) -> dict:
    method = {
        "type": "reinforcement",
        "reinforcement": {"grader": grader or STRING_CHECK, "hyperparameters": {"rounds": 1}},
    }
    return {"model": "tiny-random", "training_file": training, "method": method, **extra}


# --- graders -------------------------------------------------------------------------------------


def test_validate_reference_example_returns_the_grader(sdk):
    assert sdk.fine_tuning.alpha.graders.validate(grader=STRING_CHECK).grader.to_dict() == STRING_CHECK


def test_run_with_the_official_client_reads_output_json(sdk):
    grader = {**STRING_CHECK, "input": "{{sample.output_json.label}}"}
    result = sdk.fine_tuning.alpha.graders.run(
        grader=grader, model_sample='{"label": "positive"}', item={"label": "positive"}
    )
    assert result.reward == 1.0 and not result.metadata.errors.sample_parse_error
    failed = sdk.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="positive", item={"label": "positive"}
    )
    assert failed.reward == 0.0 and failed.metadata.errors.sample_parse_error


def test_run_multi_reports_sub_rewards_and_a_formula_error_is_flagged(client):
    grader = {
        "type": "multi",
        "graders": {"a": STRING_CHECK, "b": {**STRING_CHECK, "operation": "ne"}},
        "calculate_output": "exp(1000 * a) + b",
    }
    body = client.post(
        RUN, json={"grader": grader, "model_sample": "positive", "item": {"label": "positive"}}
    ).json()
    assert body["reward"] == 0.0 and body["sub_rewards"] == {"a": 1.0, "b": 0.0}
    assert body["metadata"]["errors"]["formula_parse_error"] and body["metadata"]["status"] == "error"


@pytest.mark.parametrize(
    "grader, param",
    [
        ({**PYTHON, "pass_threshold": "x"}, "grader.pass_threshold"),
        ({**PYTHON, "pass_threshold": None}, "grader.pass_threshold"),
        ({**MULTI, "pass_threshold": "x"}, "grader.pass_threshold"),
        ({**MULTI, "pass_threshold": None}, "grader.pass_threshold"),
        ({**MULTI, "calculate_output": "min(a)"}, "grader.calculate_output"),
        ({**MULTI, "calculate_output": "abs(a, a)"}, "grader.calculate_output"),
        ({**MULTI, "calculate_output": " + ".join(["a"] * 1200)}, "grader.calculate_output"),
        ({**MULTI, "calculate_output": "1e400 * a"}, "grader.calculate_output"),
        ({**MULTI, "calculate_output": "-" * 100_000 + "a"}, "grader.calculate_output"),
        ({**PYTHON, "source": "def grade(s, i):\n    return " + "-" * 100_000 + "1\n"}, "grader.source"),
        ({**PYTHON, "source": "def grade(s, i): return 1\nx = " + "(" * 5000 + ")" * 5000}, "grader.source"),
        ({**PYTHON, "source": "raise SystemExit\ndef grade(s, i): return 1\n"}, "grader.source"),
        ({"type": "multi", "graders": {"m": MULTI}, "calculate_output": "m"}, "grader.graders.m.type"),
        ({**STRING_CHECK, "type": "text_similarity", "operation": None}, "grader.operation"),
        (
            {k: v for k, v in STRING_CHECK.items() if k != "operation"} | {"type": "text_similarity"},
            "grader.evaluation_metric",
        ),
    ],
)
def test_graders_that_could_not_run_are_400_naming_the_field(client, grader, param):
    error = error_of(client.post(VALIDATE, json={"grader": grader}))
    assert error["param"] == param and error["code"] == "invalid_grader", error


@pytest.mark.parametrize(
    "grader, param",
    [
        ({**PYTHON, "pass_threshold": "x"}, "method.reinforcement.grader.pass_threshold"),
        ({**MULTI, "pass_threshold": None}, "method.reinforcement.grader.pass_threshold"),
        ({**MULTI, "calculate_output": "abs(a, a)"}, "method.reinforcement.grader.calculate_output"),
        (
            {**PYTHON, "source": "import no_such_module\ndef grade(s, i): return 1\n"},
            "method.reinforcement.grader.source",
        ),
        ({**STRING_CHECK, "reference": "{{item.label.text}}"}, "method.reinforcement.grader.reference"),
    ],
)
def test_job_creation_refuses_the_same_graders_and_writes_no_job(client, grader, param):
    error = error_of(client.post(JOBS, json=job_body(upload(client), grader)))
    assert error["param"] == param, error
    assert client.get(JOBS).json()["data"] == []


# --- jobs, lists and cursors ------------------------------------------------------------------------


def test_jobs_list_filters_by_metadata_with_the_official_client(client, sdk):
    training = upload(client)
    tagged = sdk.fine_tuning.jobs.create(
        **job_body(training, metadata={"team": "a", "run": "1"}), suffix="mine"
    )
    other = sdk.fine_tuning.jobs.create(**job_body(training, metadata={"team": "b"}))
    bare = sdk.fine_tuning.jobs.create(**job_body(training))
    assert tagged.user_provided_suffix == "mine" and bare.user_provided_suffix is None  # type: ignore[attr-defined]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "a"})] == [tagged.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "a", "run": "2"})] == []
    assert [j["id"] for j in client.get(JOBS, params={"metadata": "null"}).json()["data"]] == [bare.id]
    assert {j.id for j in sdk.fine_tuning.jobs.list()} == {tagged.id, other.id, bare.id}


def test_pages_follow_the_cursor_and_an_unknown_cursor_is_404(client, sdk):
    training = upload(client)
    ids = [sdk.fine_tuning.jobs.create(**job_body(training)).id for _ in range(3)]
    first = client.get(JOBS, params={"limit": 2}).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert (first["first_id"], first["last_id"]) == (ids[2], ids[1])
    rest = client.get(JOBS, params={"limit": 2, "after": first["last_id"]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert [j.id for j in sdk.fine_tuning.jobs.list(limit=1)] == ids[::-1]  # the client's auto-paging
    for path in (JOBS, "/v1/files", f"{JOBS}/{ids[0]}/events", f"{JOBS}/{ids[0]}/checkpoints"):
        error = error_of(client.get(path, params={"after": "ftjob-nope"}), 404)
        assert error["param"] == "after", path
    # Another job's event is not a cursor of this job's list.
    other_event = client.get(f"{JOBS}/{ids[1]}/events").json()["data"][0]["id"]
    assert (
        error_of(client.get(f"{JOBS}/{ids[0]}/events", params={"after": other_event}), 404)["param"]
        == "after"
    )


def test_checkpoints_list_has_first_and_last_id(client, sdk):
    job = sdk.fine_tuning.jobs.create(**job_body(upload(client)))
    with client.app.state.runtime.sessions() as s:
        for n in (1, 2, 3):
            s.add(
                Checkpoint(
                    job_id=job.id,
                    round=n,
                    step_number=2 * n,
                    name=f"{job.id}:ckpt-{n}",
                    metrics={"loss": 0.5 / n},
                    storage_key=f"k{n}",
                )
            )
        s.commit()
    page = client.get(f"{JOBS}/{job.id}/checkpoints", params={"limit": 2}).json()
    assert [c["step_number"] for c in page["data"]] == [6, 4] and page["has_more"]
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][1]["id"]
    listed = sdk.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in listed] == [6, 4, 2] and listed.data[
        0
    ].metrics.train_loss == pytest.approx(0.5 / 3)
    events = sdk.fine_tuning.jobs.list_events(job.id)
    assert events.data[0].object == "fine_tuning.job.event" and events.data[0].level == "info"


def test_the_best_checkpoint_is_marked_and_resolves_by_the_id_best(client, sdk, tmp_path):
    job = sdk.fine_tuning.jobs.create(**job_body(upload(client)))
    missing = error_of(client.get(f"{JOBS}/{job.id}/checkpoints/best/adapter"), 404)
    assert missing["param"] == "checkpoint_id" and "eval_interval" in missing["message"]
    runtime = client.app.state.runtime
    (tmp_path / "k2").write_bytes(b"the best archive")
    runtime.artifacts.put_file("k2", tmp_path / "k2")
    with runtime.sessions() as s:
        for n in (1, 2, 3):
            scores = {"full_valid_pass@1": 0.25 * n % 0.75, **({"best": True} if n == 2 else {})}
            s.add(
                Checkpoint(
                    job_id=job.id,
                    round=n,
                    step_number=2 * n,
                    name=f"{job.id}:ckpt-{n}",
                    metrics={"loss": 0.5, **scores},
                    storage_key=f"k{n}",
                )
            )
        s.commit()
    listed = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.model_extra["best"] for c in listed] == [False, True, False]
    assert (
        listed[1].metrics.model_extra["full_valid_pass@1"] == 0.5
        and "best" not in listed[1].metrics.model_extra
    )
    response = client.get(f"{JOBS}/{job.id}/checkpoints/best/adapter")
    assert response.status_code == 200 and response.content == b"the best archive"
    assert "round-2" in response.headers["content-disposition"]


# --- bad bytes -------------------------------------------------------------------------------------


def raw_post(client, path: str, text: str):
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "value, why",
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e400", "1e400"),
        ("99999999999999999999", "out of range"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_400_naming_the_field(client, value, why):
    body = json.dumps(job_body(upload(client))).replace('"rounds": 1', f'"lora_alpha": {value}')
    error = error_of(raw_post(client, JOBS, body))
    assert error["param"] == "method.reinforcement.hyperparameters.lora_alpha" and why in error["message"]
    assert client.get(JOBS).json()["data"] == []


@pytest.mark.parametrize("field", ["suffix", "metadata.k", "training_file", "model"])
def test_nul_bytes_in_the_body_are_400_naming_the_field(client, field):
    body = job_body(upload(client), suffix="ok", metadata={"k": "v"})
    if field == "metadata.k":
        body["metadata"]["k"] = "a\x00b"
    else:
        body[field] = body[field] + "\x00"
    error = error_of(client.post(JOBS, json=body))
    assert error["param"] == field and "NUL" in error["message"]


@pytest.mark.parametrize(
    "path, param",
    [
        (f"{JOBS}/ftjob-a%00b", "fine_tuning_job_id"),
        (f"{JOBS}/ftjob-a%00b/events", "fine_tuning_job_id"),
        ("/v1/files/file-%00", "file_id"),
        ("/v1/files?after=file-%00", "after"),
        (f"{JOBS}?after=%00", "after"),
        (f"{JOBS}?metadata%5Bk%5D=%00", "metadata[k]"),
    ],
)
def test_nul_bytes_in_paths_and_cursors_are_400_naming_the_param(client, path, param):
    assert error_of(client.get(path))["param"] == param


@pytest.mark.parametrize(
    "query, param",
    [
        ("limit=" + "1" + "0" * 30, "limit"),
        (f"step={2**63}", "step"),
        (f"step_min={2**63}", "step_min"),
        ("limit=" + "9" * 5000, "limit"),
    ],
)
def test_out_of_range_integers_in_queries_are_400(client, query, param):
    job = client.post(JOBS, json=job_body(upload(client))).json()["id"]
    path = f"{JOBS}/{job}/metrics?{query}" if "step" in query else f"{JOBS}?{query}"
    assert error_of(client.get(path))["param"] == param


def test_deep_json_bodies_and_jsonl_lines_are_400(client):
    deep = '{"grader": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "nested" in error_of(raw_post(client, VALIDATE, deep))["message"]
    moderately = '{"grader": {"type": "string_check", "x": ' + "[" * 200 + "]" * 200 + "}}"
    error = error_of(raw_post(client, VALIDATE, moderately))
    assert "nested" in error["message"] and error["param"].startswith("grader.x")
    line = '{"messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    ok = '{"messages": [{"role": "user", "content": "hi"}]}\n'
    response = client.post(
        "/v1/files", files={"file": ("t.jsonl", (ok + line).encode())}, data={"purpose": "fine-tune"}
    )
    error = error_of(response)
    assert error["param"] == "file" and "Line 2" in error["message"] and "nested" in error["message"]


def test_files_list_takes_the_documented_order_and_purpose(client, sdk):
    ids = [upload(client) for _ in range(3)]
    assert [f.id for f in sdk.files.list()] == ids[::-1]
    assert [f.id for f in sdk.files.list(order="asc", limit=2)] == ids
    assert [f.id for f in sdk.files.list(purpose="fine-tune")] == ids[::-1]
    assert list(sdk.files.list(purpose="assistants")) == []
    page = client.get("/v1/files", params={"limit": 2}).json()
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[2], ids[1], True)
