"""The learning-rate schedule: warmup, then constant or decayed to 0 over the planned run (rounds or
samples done, whatever the steps per round)."""

import math

import pytest

from rapid_core.config import make_config
from rapid_core.state import Progress
from rapid_core.update import lr_factor, run_fraction


def test_constant_after_warmup():
    assert [lr_factor(2, "constant", s / 10, s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_linear_decays_from_1_to_0_with_the_run():
    assert [lr_factor(0, "linear", f, 0) for f in (0.0, 0.25, 0.5, 1.0)] == [1.0, 0.75, 0.5, 0.0]


def test_cosine_decay_times_the_warmup_ramp():
    f = [lr_factor(2, "cosine", s / 10, s) for s in range(10)]
    assert f[0] == 0.5 and f[1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert f[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.6)))
    assert all(a >= b for a, b in zip(f[1:], f[2:], strict=False)) and f[-1] < 0.05


def test_run_fraction_counts_rounds_and_samples_not_steps():
    cfg = make_config(rounds=4, prompts_per_round=4, group_size=4, mini_batch_size=4)
    # Round 2 of 4, step 1 of 2 (however many steps the round has): 2.5 rounds of 4 done.
    assert run_fraction(cfg, Progress(round=2, samples=32), 16, 1, 2, 0.0) == 0.625
    assert run_fraction(cfg, Progress(round=2, samples=32), 16, 1, 4, 0.0) == 0.5625
    # max_samples ends this run first: 32 + 16 * 1/2 of 50 samples.
    capped = make_config(rounds=4, max_samples=50, prompts_per_round=4, group_size=4, mini_batch_size=4)
    assert run_fraction(capped, Progress(round=2, samples=32), 16, 1, 2, 0.0) == 0.8
    # Past the plan (a resumed run given more rounds) the fraction stays at 1: the rate at 0.
    assert run_fraction(cfg, Progress(round=6, samples=96), 16, 0, 4, 0.0) == 1.0


def test_run_fraction_follows_a_time_budget_when_it_ends_the_run_first():
    timed = make_config(rounds=None, time_budget_s=60, lr_schedule="linear")
    assert run_fraction(timed, Progress(round=3), 16, 1, 2, 15.0) == 0.25
    assert run_fraction(timed, Progress(round=9), 16, 1, 2, 75.0) == 1.0  # the last round runs past it
    both = make_config(rounds=10, time_budget_s=60, lr_schedule="linear")
    assert run_fraction(both, Progress(round=2), 16, 0, 4, 30.0) == 0.5  # time is ahead of rounds
    assert run_fraction(both, Progress(round=6), 16, 0, 4, 30.0) == 0.6  # rounds are ahead of time


def _step_lrs(tmp_path, **settings) -> list[tuple[int, float]]:
    """(round, learning rate) of each optimizer step of a tiny linear-decay run."""
    import json

    from rapid_core.config import RunPaths
    from rapid_core.trainer import train

    base = {"model": "tiny-random", "prompts_per_round": 4, "group_size": 4, "max_new_tokens": 4}
    base |= {"eval_problems": 0, "learning_rate": 1e-2, "dtype": "fp32", "lr_schedule": "linear"}
    base["drop_zero_std"] = False  # the tiny model's groups are mostly all-equal: every step counts here
    train(make_config(**(base | settings)), RunPaths(output_dir=tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return [(r["round"], r["lr"]) for r in lines if r["kind"] == "step"]


def test_a_run_steps_with_the_decayed_rate_and_records_it(tmp_path, tiny_model):
    steps = _step_lrs(tmp_path, rounds=2, mini_batch_size=8, batch_ratio_control="fixed")  # U = 2 a round
    lrs = [lr for _, lr in steps]
    assert lrs == pytest.approx([1e-2, 0.75e-2, 0.5e-2, 0.25e-2])


def test_the_decay_follows_rounds_when_drop_zero_std_skips_steps(tmp_path, tiny_model):
    """Each round's steps split the round's share of the decay, however many survive the drop."""
    steps = _step_lrs(
        tmp_path,
        rounds=4,
        mini_batch_size=4,
        batch_ratio_control="fixed",
        drop_zero_std=True,
        temperature=2.0,
    )
    by_round = {}
    for k, lr in steps:
        by_round.setdefault(k, []).append(lr)
    for k, lrs in by_round.items():
        assert lrs == pytest.approx([1e-2 * (1 - (k + u / len(lrs)) / 4) for u in range(len(lrs))])


def test_a_run_cut_by_its_time_budget_decays_its_rate_with_the_clock(tmp_path, tiny_model):
    steps = _step_lrs(
        tmp_path, rounds=None, time_budget_s=5.0, mini_batch_size=4, batch_ratio_control="fixed"
    )
    lrs = [lr for _, lr in steps]
    # The first step comes after the round's generation: some of the budget is already spent (a
    # rounds-planned run steps at the full 1e-2 first), and the rate only falls from there.
    assert 0 < lrs[0] < 1e-2
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] < lrs[0]
