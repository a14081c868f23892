"""Config validation and the `rapid` command: bad input fails before any model loads, naming the field."""

import json
import subprocess
import sys

import pytest

from rapid_core.config import RunPaths, make_config
from rapid_core.errors import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"learning_rate": -1}, "learning_rate"),
        ({"algorithm": "ppo"}, "algorithm"),
        ({"group_size": 1}, "group_size"),
        ({"bogus": 1}, "bogus"),
        ({"is_level": "word"}, "is_level"),
        ({"norm": "max"}, "norm"),
        ({"eval_interval": 0}, "eval_interval"),
        ({"lora_dropout": 0.1}, "lora_dropout"),
        ({"kl_beta": 0.1, "finetune": "full"}, "kl_beta"),
        ({"output_dir": "runs/x"}, "output_dir"),  # a path, not part of the training config
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as err:
        make_config(**values)
    assert err.value.field == field


def test_shape_rules():
    with pytest.raises(ConfigError, match="multiple of mini_batch_size"):
        make_config(prompts_per_round=3, group_size=4, mini_batch_size=8)
    with pytest.raises(ConfigError, match="multiple of group_size"):
        make_config(algorithm="grpo", group_size=8, mini_batch_size=12)
    with pytest.raises(ConfigError, match="same policy that sampled"):
        make_config(lora_dropout=0.05)


def test_batch_terms():
    rapid = make_config(prompts_per_round=16, group_size=8, mini_batch_size=32)
    assert (rapid.inference_batch, rapid.batch_ratio, rapid.round_prompts) == (128, 4, 16)
    grpo = make_config(algorithm="grpo", prompts_per_round=16, group_size=8, mini_batch_size=32)
    assert (grpo.inference_batch, grpo.batch_ratio, grpo.round_prompts) == (32, 1, 4)


def rapid(*args, **kw):
    return subprocess.run(
        [sys.executable, str(REPO / "rapid_cli.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        **kw,
    )


def test_train_help_documents_every_option_with_its_default():
    out = rapid("train", "--help").stdout
    for flag in (
        "--learning-rate",
        "--is-clip",
        "--mini-batch-size",
        "--prompts-per-round",
        "--time-budget-s",
        "--output-dir",
        "--data-path",
        "--eval-path",
        "--eval-interval",
    ):
        assert flag in out
    assert "(default: 2.0)" in out  # is_clip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--learning-rate", "-1"], "learning_rate"),
        (["--algorithm", "nope"], "algorithm"),
        (["--group-size", "two"], "group_size"),
        (["--model", "no-such-model"], "unknown model"),
        (["--task", "jsonl", "--grader", '{"type": "exact", "reference": "x"}'], "data_path"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_message_naming_the_problem(args, message, tmp_path):
    result = rapid("train", "--output-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_config_file_is_read_and_flags_override_it(tmp_path):
    from rapid_core.cli import build_parser, config_from_args

    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            {
                "learning_rate": 0.001,
                "group_size": 4,
                "task_options": {"max_value": 9},
                "output_dir": "runs/a",
                "data_path": "train.jsonl",
            }
        )
    )
    args = build_parser().parse_args(
        ["train", "--config", str(path), "--group-size", "8", "--output-dir", "runs/b"]
    )
    cfg, paths = config_from_args(args)
    assert cfg.learning_rate == 0.001 and cfg.group_size == 8 and cfg.task_options == {"max_value": 9}
    assert paths == RunPaths(output_dir="runs/b", data_path="train.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [")
    with pytest.raises(ConfigError, match="cannot parse"):
        config_from_args(build_parser().parse_args(["train", "--config", str(bad)]))


def test_rapid_eval_scores_a_model_with_and_without_an_adapter(tmp_path, tiny_model):
    from rapid_core.trainer import train

    train(
        make_config(
            model=tiny_model,
            rounds=1,
            prompts_per_round=2,
            group_size=2,
            mini_batch_size=4,
            max_new_tokens=4,
            eval_problems=0,
        ),
        RunPaths(output_dir=tmp_path / "run"),
    )
    common = ["--model", tiny_model, "--eval-problems", "3", "--eval-k", "2", "--max-new-tokens", "4"]
    for extra in ([], ["--adapter", str(tmp_path / "run" / "adapter")]):
        result = rapid("eval", *common, *extra)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["problems"] == 3 and 0 <= report["pass@1"] <= 1 and "pass@2" in report
    missing = rapid("eval", *common, "--adapter", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "adapter_config.json" in missing.stderr


def test_an_unknown_rapid_variable_stops_the_command_naming_the_nearest_known_one(tmp_path):
    import os

    env = {**os.environ, "RAPID_DATASET_DIR": str(tmp_path)}  # RAPID_DATASETS_DIR, misspelt
    result = rapid("train", "--help", env=env)
    assert result.returncode == 2
    assert "RAPID_DATASET_DIR" in result.stderr and "did you mean RAPID_DATASETS_DIR?" in result.stderr
