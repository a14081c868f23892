"""examples/main_job.py's ``--set KEY=VALUE``: how the README's main job takes other hyperparameters."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "main_job", Path(__file__).resolve().parents[2] / "examples" / "main_job.py"
)
main_job = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main_job)


def test_values_are_read_as_json_and_fall_back_to_text():
    assert main_job.parse_setting("temperature=0.7") == ("temperature", 0.7)
    assert main_job.parse_setting("rounds=40") == ("rounds", 40)
    assert main_job.parse_setting("time_budget_s=null") == ("time_budget_s", None)
    assert main_job.parse_setting("lr_schedule=cosine") == ("lr_schedule", "cosine")
    assert main_job.parse_setting("stop=a=b") == ("stop", "a=b")


@pytest.mark.parametrize("text", ["temperature", "=0.7", ""])
def test_a_setting_without_key_or_value_is_refused(text):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        main_job.parse_setting(text)
