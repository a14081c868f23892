"""Job requests become validated TrainConfig values; bad ones name the field."""

from __future__ import annotations

import pytest

from api.errors import InvalidRequest
from api.services.files import validate_jsonl
from api.services.job_config import BASE_LEARNING_RATE, build_job_config
from rapid_core.errors import ModelError
from store.models import File
from store.settings import Settings

GRADER = {"type": "numeric", "reference": "{{item.answer}}"}


def training(lines: int = 40, fields=("answer", "messages")) -> File:
    return File(id="file-t", lines=lines, fields=list(fields))


def build(hyper: dict, model: str = "tiny-random", grader: dict = GRADER, file: File | None = None):
    return build_job_config(model=model, grader=grader, hyperparameters=hyper, seed=3,
                            training=file or training(), validation=None, settings=Settings())  # fmt: skip


def test_openai_hyperparameters_map_onto_the_config():
    config, queue = build({"batch_size": 8, "learning_rate_multiplier": 0.5, "n_epochs": 2, "group_size": 4})
    assert config["mini_batch_size"] == 8 and config["learning_rate"] == BASE_LEARNING_RATE * 0.5
    assert config["rounds"] == 2 * 40 // config["prompts_per_round"]  # n_epochs passes over 40 prompts
    assert config["task"] == "jsonl" and config["seed"] == 3 and queue == "cpu"
    assert "output_dir" not in config and "data_path" not in config


def test_device_picks_the_queue():
    assert build({"device": "cuda"})[1] == "cuda"


@pytest.mark.parametrize(
    "hyper,param",
    [({"group_size": 1}, "group_size"), ({"group_size": 10**6}, "group_size"), ({"data_path": "/etc/passwd"}, "data_path"),
     ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"), ({"nonsense": 1}, "nonsense"),
     ({"reasoning_effort": "high"}, "reasoning_effort"), ({"n_epochs": -1}, "n_epochs")],
)  # fmt: skip
def test_bad_hyperparameters_name_the_field(hyper, param):
    with pytest.raises(InvalidRequest) as err:
        build(hyper)
    assert err.value.param == f"method.reinforcement.hyperparameters.{param}"
    assert param in err.value.message


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
    [("/etc", "/etc-nope"), ("/root", "/root-nope"), ("FAKE.gguf", "/root/secret.gguf"), ("FAKE", "/nope/x"),
     ("/usr/bin/env", "/usr/bin/nope"), ("~root", "~nobody-here/x"), ("/etc/hostname", "/etc/ho\x00st")],
)  # fmt: skip
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

    config, _ = build({"rounds": 1}, model=resolve_model(tiny_model).path)
    assert config["model"] == resolve_model(tiny_model).path


def test_a_hub_id_is_checked_for_shape_only():
    config, _ = build({}, model="Qwen/Qwen2.5-0.5B-Instruct")
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
