"""The learning-rate schedule: warmup, then constant or decayed to 0 over the planned steps."""

import math

import pytest

from rapid_core.config import make_config
from rapid_core.errors import ConfigError
from rapid_core.update import lr_factor


def test_constant_after_warmup():
    assert [lr_factor(2, "constant", 10, s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_linear_decays_from_1_to_near_0_on_the_last_planned_step():
    f = [lr_factor(0, "linear", 4, s) for s in range(4)]
    assert f == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(0, "linear", 4, 10) == 0.0  # past the plan (a resumed run with more rounds) stays at 0


def test_cosine_decay_starts_after_warmup():
    f = [lr_factor(2, "cosine", 10, s) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0]
    assert f[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False)) and f[-1] < 0.05


def test_planned_steps_come_from_rounds_or_max_samples():
    assert make_config(rounds=3, prompts_per_round=4, group_size=4, mini_batch_size=4).planned_steps == 12
    cfg = make_config(rounds=None, max_samples=40, prompts_per_round=4, group_size=4, mini_batch_size=4)
    assert cfg.planned_steps == 10


def test_decay_without_a_planned_length_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as err:
        make_config(rounds=None, time_budget_s=60, lr_schedule="linear")
    assert err.value.field == "lr_schedule"


def test_a_run_steps_with_the_decayed_rate_and_records_it(tmp_path, tiny_model):
    import json

    from rapid_core.config import RunPaths
    from rapid_core.trainer import train

    cfg = make_config(
        model="tiny-random",
        rounds=2,
        prompts_per_round=4,
        group_size=4,
        mini_batch_size=8,
        batch_ratio_control="fixed",  # U = 2 every round: the planned steps are the steps taken
        max_new_tokens=4,
        eval_problems=0,
        learning_rate=1e-2,
        dtype="fp32",
        lr_schedule="linear",
    )
    train(cfg, RunPaths(output_dir=tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in lines if r["kind"] == "step"]
    assert lrs == pytest.approx([1e-2, 0.75e-2, 0.5e-2, 0.25e-2])
