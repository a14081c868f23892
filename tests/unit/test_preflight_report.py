"""The pre-flight report: statistics of sampled and graded groups, the ETA, and its warnings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import PreflightCreate
from rapid_core.config import make_config
from rapid_core.preflight import JobSize, Measured, job_size, preflight_report


def measured(scores, *, g=4, statuses=None, lengths=None, truncated=None, latencies=None, **over) -> Measured:
    n = len(scores)
    return Measured(
        scores=scores,
        statuses=statuses or ["ok" if s >= 1 else "wrong" for s in scores],
        completion_tokens=lengths or [10] * n,
        truncated=truncated or [False] * n,
        grade_seconds=latencies or [0.01] * n,
        group_size=g,
        max_new_tokens=16,
        generate_s=over.pop("generate_s", 2.0),
        grade_s=over.pop("grade_s", 0.5),
        **over,
    )


SIZE = JobSize(rounds=10, train_samples=640, eval_samples=16, steps=40, time_budget_s=None)


def test_statistics_of_rewards_groups_and_lengths():
    scores = [1, 0, 1, 0] + [1, 1, 1, 1] + [0, 0, 0, 0] + [0, 0.5, 0, 0]
    lengths = [4, 8, 16, 16] * 4
    report = preflight_report(measured(scores, lengths=lengths, truncated=[n == 16 for n in lengths]), SIZE)
    assert report["samples"] == 16 and report["prompts"] == 4 and report["group_size"] == 4
    assert report["reward"]["mean"] == pytest.approx(6.5 / 16)
    assert report["reward"]["std"] == pytest.approx((sum((s - 6.5 / 16) ** 2 for s in scores) / 16) ** 0.5)
    assert report["reward"]["pass_rate"] == pytest.approx(6 / 16)
    assert report["zero_variance_share"] == 0.5  # the all-1 and the all-0 group
    assert report["completions"]["truncated_share"] == 0.5
    assert report["completions"]["tokens"]["max"] == 16 and report["completions"]["tokens"]["p50"] == 8
    warnings = " ".join(report["warnings"])
    assert "50% of groups have identical rewards" in warnings
    assert "50% of completions hit max_new_tokens=16: raise it" in warnings


def test_identical_rewards_everywhere_are_named_with_their_value():
    zero = preflight_report(measured([0.0] * 8), SIZE)
    assert zero["zero_variance_share"] == 1.0 and zero["reward"]["std"] == 0
    assert any("same reward 0" in w and "too hard" in w for w in zero["warnings"])
    one = preflight_report(measured([1.0] * 8), SIZE)
    assert any("same reward 1" in w and "nothing left to learn" in w for w in one["warnings"])


def test_a_healthy_spread_gives_no_signal_warning():
    report = preflight_report(measured([1, 0, 0, 1, 0, 1, 1, 0]), SIZE)
    assert report["zero_variance_share"] == 0
    assert not any("identical" in w or "same reward" in w or "grader failed" in w for w in report["warnings"])


def test_grader_failures_are_counted_and_a_majority_says_a_job_would_stop():
    statuses = ["error", "timeout", "error", "ok", "sandbox_failure", "wrong", "error", "ok"]
    scores = [0, 0, 0, 1, 0, 0, 0, 1]
    report = preflight_report(measured(scores, statuses=statuses, first_failure="NameError: x"), SIZE)
    assert (
        report["grader"]["errors"],
        report["grader"]["timeouts"],
        report["grader"]["sandbox_failures"],
    ) == (3, 1, 1)
    failure = next(w for w in report["warnings"] if "grader failed" in w)
    assert "5 of 8 samples" in failure and "would stop" in failure and "NameError: x" in failure
    few = preflight_report(
        measured(scores, statuses=["error"] + ["ok" if s else "wrong" for s in scores[1:]]), SIZE
    )
    assert not any("would stop" in w for w in few["warnings"])


def test_latency_percentiles_and_the_slow_grader_warning():
    latencies = [0.1 * i for i in range(1, 21)]
    report = preflight_report(measured([1, 0] * 10, latencies=latencies), SIZE)
    lat = report["grader"]["latency_s"]
    assert (
        lat["p50"] == pytest.approx(1.0)
        and lat["p90"] == pytest.approx(1.8)
        and lat["max"] == pytest.approx(2.0)
    )
    assert any("grader is slow: 1.8 s per sample (p90)" in w for w in report["warnings"])
    fast = preflight_report(measured([1, 0] * 10), SIZE)
    assert not any("slow" in w for w in fast["warnings"])


def test_eta_scales_the_measured_time_per_sample_and_step_to_the_job():
    report = preflight_report(measured([1, 0] * 4, generate_s=3.0, grade_s=1.0, train_step_s=2.0), SIZE)
    eta = report["eta"]
    assert eta["seconds_per_sample"] == pytest.approx(0.5) and eta["samples"] == 656
    assert eta["seconds"] == pytest.approx(656 * 0.5 + 40 * 2.0)
    assert any("about 7 min (656 samples)" in w for w in report["warnings"])
    untrained = preflight_report(measured([1, 0] * 4, generate_s=3.0, grade_s=1.0), SIZE)["eta"]
    assert untrained["seconds"] == pytest.approx(328) and "no training time" in untrained["basis"]


def test_eta_counts_only_the_steps_of_groups_with_a_spread_when_they_are_dropped():
    # 2 of the 4 groups are all-equal: under drop_zero_std half of each round's 64 samples train,
    # 32 samples = 2 mini-batches of 16 per round instead of 4.
    size = JobSize(10, 640, 0, 40, None, round_samples=64, mini_batch=16, drops_zero_std=True)
    scores = [1, 0, 1, 0] + [1, 1, 1, 1] + [0, 0, 0, 0] + [0, 1, 0, 0]
    eta = preflight_report(measured(scores, generate_s=3.0, grade_s=1.0, train_step_s=2.0), size)["eta"]
    assert (eta["steps"], eta["steps_if_all_train"]) == (20, 40)
    assert eta["seconds"] == pytest.approx(640 * 0.25 + 20 * 2.0)
    assert "20 of 40" in eta["basis"] and "50% of groups" in eta["basis"]
    # Kept samples round up to whole mini-batches per round: 3 of 4 groups = 48 samples = 3 steps.
    three = [1, 0, 1, 0] + [1, 1, 0, 1] + [0, 0, 0, 0] + [0, 1, 0, 0]
    assert preflight_report(measured(three, train_step_s=1.0), size)["eta"]["steps"] == 30
    # Without the filter every mini-batch trains, whatever the groups.
    kept = JobSize(10, 640, 0, 40, None, round_samples=64, mini_batch=16, drops_zero_std=False)
    assert preflight_report(measured(scores, train_step_s=2.0), kept)["eta"]["steps"] == 40
    # Under batch_ratio_control=auto (no fixed round size) the kept share of all samples counts.
    auto = JobSize(None, 640, 0, 40, None, mini_batch=16, drops_zero_std=True)
    assert preflight_report(measured(scores, train_step_s=2.0), auto)["eta"]["steps"] == 20


def test_job_size_from_the_config():
    cfg = make_config(
        rounds=5, group_size=4, prompts_per_round=8, mini_batch_size=8, eval_problems=10, eval_k=2
    )
    size = job_size(cfg)
    assert size.rounds == 5 and size.train_samples == 5 * cfg.inference_batch
    assert size.steps == 5 * (cfg.inference_batch // 8) and size.eval_samples == 2 * 10 * 2
    assert (size.round_samples, size.mini_batch) == (cfg.inference_batch, 8) and size.drops_zero_std
    assert not job_size(make_config(rounds=5, drop_zero_std=False)).drops_zero_std
    assert not job_size(make_config(rounds=5, algorithm="grpo")).drops_zero_std
    budget = job_size(make_config(rounds=None, time_budget_s=120, eval_problems=0))
    assert budget.rounds is None and budget.train_samples is None and budget.eval_samples == 0
    report = preflight_report(measured([1, 0] * 4), budget)
    assert report["eta"]["seconds"] == 120 and "time_budget_s" in report["eta"]["basis"]
    # Under batch_ratio_control=auto an epoch count becomes max_samples: rounds vary, samples do not.
    auto = job_size(make_config(rounds=None, max_samples=640, mini_batch_size=32, eval_problems=0))
    assert (auto.rounds, auto.train_samples, auto.steps) == (None, 640, 20)


def test_samples_must_be_whole_groups_of_equal_length_lists():
    with pytest.raises(ValueError, match="whole groups"):
        preflight_report(measured([1, 0, 1], g=2), SIZE)
    with pytest.raises(ValueError, match="differ in length"):
        preflight_report(measured([1, 0], g=2, lengths=[1]), SIZE)


BODY = {
    "model": "tiny-random",
    "training_file": "file-x",
    "method": {"type": "reinforcement", "reinforcement": {"grader": {"type": "numeric", "reference": "1"}}},
}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"prompts": 0}, "prompts"),
        ({"prompts": 65}, "prompts"),
        ({"timeout_s": 601}, "timeout_s"),
        ({"timeout_s": 5}, "timeout_s"),
    ],
)
def test_the_request_bounds_prompts_and_timeout(extra, field):
    with pytest.raises(ValidationError) as err:
        PreflightCreate.model_validate(BODY | extra)
    assert err.value.errors()[0]["loc"] == (field,)
    ok = PreflightCreate.model_validate(BODY)
    assert (ok.prompts, ok.timeout_s) == (8, 300)
