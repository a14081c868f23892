"""Job requests become one validated TrainConfig; OpenAI's hyperparameters map onto it and back."""

from __future__ import annotations

import pytest
from openai.types.fine_tuning import ReinforcementHyperparameters

from api.errors import InvalidRequest
from api.services.files import validate_jsonl
from api.services.job_config import BASE_LEARNING_RATE, OPENAI_KEYS, build_job_config, openai_hyperparameters
from rapid_core.config import TrainConfig
from rapid_core.errors import ModelError
from store.models import File
from store.settings import Settings

GRADER = {"type": "numeric", "reference": "{{item.answer}}"}


def training(lines: int = 40, fields=("answer", "messages")) -> File:
    return File(id="file-t", lines=lines, fields=list(fields))


def build(hyper: dict, model: str = "tiny-random", grader: dict = GRADER, file: File | None = None):
    return build_job_config(
        model=model,
        grader=grader,
        hyperparameters=hyper,
        seed=3,
        training=file or training(),
        validation=None,
        settings=Settings(),
    )


def test_openai_hyperparameters_map_onto_the_config():
    hyper = {
        "batch_size": 8,
        "learning_rate_multiplier": 0.5,
        "n_epochs": 2,
        "group_size": 4,
        "batch_ratio_control": "fixed",
    }
    built = build(hyper)
    config = built.config
    assert config["mini_batch_size"] == 8 and config["learning_rate"] == BASE_LEARNING_RATE * 0.5
    assert config["rounds"] == 2 * 40 // config["prompts_per_round"]  # n_epochs passes over 40 prompts
    assert config["task"] == "jsonl" and config["seed"] == 3 and built.queue == "cpu"
    assert "output_dir" not in config and "data_path" not in config


def test_the_stored_config_is_what_the_worker_validates_without_translation():
    config = build(
        {"n_epochs": 3, "eval_interval": 5, "group_size": 4, "batch_ratio_control": "fixed"}
    ).config
    cfg = TrainConfig.model_validate(config)
    assert cfg.model_dump(mode="json") == config and cfg.eval_interval == 5
    assert cfg.rounds == -(-3 * 40 // cfg.round_prompts)  # ceil: the last epoch's prompts are all drawn


def test_n_epochs_bounds_the_samples_when_the_batch_ratio_is_auto():
    # auto changes the prompts per round from round to round: the passes over the records bound the samples.
    built = build({"n_epochs": 2, "group_size": 4})
    assert (built.config["max_samples"], built.config["rounds"]) == (2 * 40 * 4, None)
    assert any(n.startswith("n_epochs=2") and "320 samples (max_samples)" in n for n in built.notes)


def test_n_epochs_uses_the_prompts_per_round_of_the_algorithm():
    # grpo draws m / G prompts a round (one mini-batch), not prompts_per_round.
    config = build({"n_epochs": 1, "algorithm": "grpo", "mini_batch_size": 8, "group_size": 4}).config
    assert config["rounds"] == 40 // 2


def test_device_picks_the_queue():
    assert build({"device": "cuda"}).queue == "cuda"


@pytest.mark.parametrize(
    "hyper,param",
    [
        ({"group_size": 1}, "group_size"),
        ({"group_size": 10**6}, "group_size"),
        ({"data_path": "/etc/passwd"}, "data_path"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
        ({"nonsense": 1}, "nonsense"),
        ({"learning_rate_multiplier": "x"}, "learning_rate_multiplier"),
        ({"n_epochs": -1}, "n_epochs"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_epochs": 51}, "n_epochs"),
        ({"n_epochs": 2.5}, "n_epochs"),
        ({"eval_samples": 0}, "eval_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"eval_interval": 0}, "eval_interval"),
        ({"compute_multiplier": -1}, "compute_multiplier"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"n_epochs": 2, "rounds": 3}, "n_epochs"),
        ({"batch_size": 5}, "batch_size"),
        ({"lora_dropout": 0.1}, "lora_dropout"),
        ({"batch_ratio_control": "sometimes"}, "batch_ratio_control"),
        ({"batch_ratio_max": 0}, "batch_ratio_max"),
        ({"batch_ratio_max": 10**6}, "batch_ratio_max"),
        ({"batch_ratio_min": 8, "batch_ratio_max": 4}, "batch_ratio_min"),
        ({"prompts_per_round": 128}, "batch_ratio_max"),  # the first round's U = 32 > 16
        ({"max_new_tokens": 64, "overlong_buffer": 65}, "overlong_buffer"),
        ({"overlong_buffer": -1}, "overlong_buffer"),
        ({"mask_truncated": "sometimes"}, "mask_truncated"),
    ],
)
def test_bad_hyperparameters_name_the_field(hyper, param):
    with pytest.raises(InvalidRequest) as err:
        build(hyper)
    assert err.value.param == f"method.reinforcement.hyperparameters.{param}"
    assert param in err.value.message


def test_batch_ratio_control_is_auto_by_default_and_fixed_on_request():
    assert build({}).config["batch_ratio_control"] == "auto"
    hyper = {"batch_ratio_control": "fixed", "prompts_per_round": 128}  # U = 32: no auto bounds apply
    config = build(hyper).config
    assert (config["batch_ratio_control"], config["prompts_per_round"]) == ("fixed", 128)
    assert openai_hyperparameters(config, hyper)["batch_ratio_control"] == "fixed"


def test_overlong_settings_reach_the_run_config():
    config = build({"max_new_tokens": 128, "overlong_buffer": 32, "mask_truncated": True}).config
    assert (config["overlong_buffer"], config["mask_truncated"]) == (32, True)
    assert (build({}).config["overlong_buffer"], build({}).config["mask_truncated"]) == (0, False)


@pytest.mark.parametrize("effort", ["low", "medium", "high", "default", "auto"])
def test_documented_reasoning_efforts_are_accepted_and_said_to_change_nothing(effort):
    built = build({"reasoning_effort": effort})
    assert built.config == build({}).config
    if effort == "auto":
        assert built.notes == []
    else:
        (note,) = built.notes
        assert note.startswith(f"reasoning_effort='{effort}'") and "changes nothing here" in note


def test_each_documented_hyperparameter_set_gets_a_note_saying_what_it_does_here():
    built = build(
        {
            "batch_size": 8,
            "learning_rate_multiplier": 2,
            "n_epochs": 1,
            "eval_interval": 4,
            "eval_samples": 6,
            "compute_multiplier": 1.5,
            "reasoning_effort": "high",
        }
    )
    notes = dict(note.split("=", 1) for note in built.notes)
    assert set(notes) == set(OPENAI_KEYS)
    assert "8 samples per optimizer step" in notes["batch_size"]
    assert "0.0004" in notes["learning_rate_multiplier"]
    assert "every 4 optimizer steps on the validation file" in notes["eval_interval"]
    assert "6 held-out problems" in notes["eval_samples"]
    assert (
        "changes nothing here" in notes["compute_multiplier"]
        and "changes nothing here" in notes["reasoning_effort"]
    )
    assert f"{built.config['max_samples']} samples" in notes["n_epochs"]  # batch_ratio_control=auto
    assert built.config["eval_interval"] == 4 and built.config["eval_problems"] == 6


def test_response_lists_every_documented_key_and_only_the_rapid_settings_the_request_set():
    given = {"batch_size": 8, "group_size": 4, "reasoning_effort": "low"}
    hyper = openai_hyperparameters(build(given).config, given)
    assert list(hyper) == [*OPENAI_KEYS, "group_size"]
    assert hyper["batch_size"] == 8 and hyper["group_size"] == 4 and hyper["reasoning_effort"] == "low"
    assert [
        hyper[k]
        for k in (
            "learning_rate_multiplier",
            "n_epochs",
            "compute_multiplier",
            "eval_interval",
            "eval_samples",
        )
    ] == ["auto"] * 5
    parsed = ReinforcementHyperparameters.model_validate(hyper)  # strict parse by the typed client
    assert parsed.batch_size == 8 and parsed.n_epochs == "auto" and parsed.model_extra == {"group_size": 4}


def test_response_maps_rapid_names_back_to_openai_ones():
    given = {"mini_batch_size": 8, "learning_rate": 1e-4, "eval_problems": 5, "eval_interval": 3}
    hyper = openai_hyperparameters(build(given).config, given)
    assert (hyper["batch_size"], hyper["learning_rate_multiplier"], hyper["eval_samples"]) == (8, 0.5, 5)
    assert hyper["eval_interval"] == 3 and hyper["reasoning_effort"] == "default"
    unset = openai_hyperparameters(build({}).config, {})
    assert list(unset) == list(OPENAI_KEYS)
    ReinforcementHyperparameters.model_validate(unset)


def test_unregistered_grader_type_is_refused_by_name():
    with pytest.raises(InvalidRequest, match="'crystal_ball'"):
        build({}, grader={"type": "crystal_ball"})


def test_grader_fields_must_be_in_every_record():
    with pytest.raises(InvalidRequest, match="answer") as err:
        build({}, file=training(fields=("messages",)))
    assert err.value.param == "training_file"


def test_unknown_model_is_a_400_naming_the_model():
    with pytest.raises(InvalidRequest, match="'no-such-model' is not available") as err:
        build({}, model="no-such-model")
    assert (err.value.param, err.value.code) == ("model", "model_not_found")


@pytest.mark.parametrize(
    "there,absent",
    [
        ("/etc", "/etc-nope"),
        ("/root", "/root-nope"),
        ("FAKE.gguf", "/root/secret.gguf"),
        ("FAKE", "/nope/x"),
        ("/usr/bin/env", "/usr/bin/nope"),
        ("~root", "~nobody-here/x"),
        ("/etc/hostname", "/etc/ho\x00st"),
    ],
)
def test_a_model_path_error_reads_the_same_whether_or_not_the_path_exists(tmp_path, there, absent):
    # Files that exist but hold no model: a .gguf without GGUF's magic, a directory whose config.json
    # is not a model's.
    (tmp_path / "FAKE.gguf").write_text("secret, not a model")
    (tmp_path / "FAKE").mkdir()
    (tmp_path / "FAKE" / "config.json").write_text('{"password": "x"}')
    there = str(tmp_path / there) if there.startswith("FAKE") else there
    errors = []
    for model in (there, absent):
        with pytest.raises(InvalidRequest) as err:
            build({}, model=model)
        errors.append((err.value.message.replace(repr(model), "MODEL"), err.value.param, err.value.code))
    assert errors[0] == errors[1] and errors[0][2] == "model_not_found"


def test_a_model_directory_is_accepted_by_path(tiny_model):
    from rapid_core.model_source import resolve_model

    config = build({"rounds": 1}, model=resolve_model(tiny_model).path).config
    assert config["model"] == resolve_model(tiny_model).path


def test_a_hub_id_is_checked_for_shape_only():
    config = build({}, model="Qwen/Qwen2.5-0.5B-Instruct").config
    assert config["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ModelError, match="'Qwen/Qwen 2.5' is not a valid Hugging Face model id"):
        build({}, model="Qwen/Qwen 2.5")


def test_jsonl_validation_names_the_bad_line(tmp_path):
    good = '{"messages": [{"role": "user", "content": "hi"}], "answer": "1"}\n'
    path = tmp_path / "f.jsonl"
    path.write_text(good + "\n" + good + "{oops\n")
    with pytest.raises(InvalidRequest, match="Line 4 is not valid JSON"):
        validate_jsonl(path, 100)
    path.write_text(good * 3)
    assert validate_jsonl(path, 100) == (3, ["answer", "messages"])
    with pytest.raises(InvalidRequest, match="limit of 2 lines"):
        validate_jsonl(path, 2)


# --- through the API ------------------------------------------------------------------------------


def upload(client, tmp_path) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}\n' * 20)
    with path.open("rb") as f:
        return client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": f}).json()["id"]


def job_body(file_id: str, **extra) -> dict:
    hyper = {"rounds": 1, "group_size": 2, "prompts_per_round": 2, "mini_batch_size": 2}
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": hyper}}
    return {"model": "tiny-random", "training_file": file_id, "method": method, **extra}


def test_created_job_echoes_hyperparameters_for_a_typed_client_and_events_explain_them(api_client, tmp_path):
    body = job_body(upload(api_client, tmp_path))
    body["method"]["reinforcement"]["hyperparameters"] |= {
        "reasoning_effort": "medium",
        "compute_multiplier": 2,
    }
    response = api_client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    job = response.json()
    hyper = ReinforcementHyperparameters.model_validate(job["method"]["reinforcement"]["hyperparameters"])
    assert hyper.reasoning_effort == "medium" and hyper.compute_multiplier == 2 and hyper.n_epochs == "auto"
    assert hyper.model_extra == {"rounds": 1, "group_size": 2, "prompts_per_round": 2, "mini_batch_size": 2}
    assert job["hyperparameters"] == {"batch_size": 2, "learning_rate_multiplier": "auto", "n_epochs": "auto"}
    events = api_client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    messages = [e["message"] for e in events]
    assert any(
        m.startswith("Hyperparameter reasoning_effort='medium'") and "changes nothing" in m for m in messages
    )
    assert any(
        m.startswith("Hyperparameter compute_multiplier=2") and "changes nothing" in m for m in messages
    )


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"suffix": "s" * 65}, "suffix"),
        ({"hyperparameters": {"n_epochs": 2}}, "hyperparameters"),
    ],
)
def test_documented_bounds_of_the_job_body_are_enforced(api_client, tmp_path, extra, param):
    response = api_client.post("/v1/fine_tuning/jobs", json=job_body(upload(api_client, tmp_path), **extra))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    if param == "hyperparameters":
        assert "deprecated" in error["message"] and "method.reinforcement.hyperparameters" in error["message"]


def test_metadata_at_the_documented_limits_is_accepted(api_client, tmp_path):
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    response = api_client.post(
        "/v1/fine_tuning/jobs",
        json=job_body(upload(api_client, tmp_path), metadata=metadata, suffix="s" * 64),
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata
