"""batch_ratio_control=auto: the pure policy (grow, shrink, hold, bounds, memory, reasons) and the
trainer asking it for each round's B (decisions recorded, sample accounting, exact resume)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rapid_core.batch_ratio import (
    Limits,
    RoundRecord,
    late_health,
    next_batch_ratio,
    projected,
    ratio_unit,
    step_series,
)
from rapid_core.callbacks import Callback
from rapid_core.config import RunPaths, make_config
from rapid_core.errors import Cancelled, ConfigError
from rapid_core.trainer import train
from worker.callback import batch_decision

LIM = Limits(mini_batch_size=32, group_size=8, start=4, min_ratio=1, max_ratio=16)


def rec(
    u: int, gen_s: float = 10.0, train_s: float = 20.0, ess=0.99, clip=0.0, kl=0.001, mem=None
) -> RoundRecord:
    return RoundRecord(u, u * 32, gen_s, 0.1, train_s, ess, clip, kl, mem)


def test_first_round_starts_at_the_configured_ratio():
    d = next_batch_ratio([], LIM)
    assert d.batch_ratio == 4 and d.reason == "start at U=4" and d.inference_batch(LIM) == 128


def test_healthy_late_steps_probe_the_larger_batch_once():
    d = next_batch_ratio([rec(4)], LIM)
    assert d.batch_ratio == 8 and d.reason.startswith("grow U 4->8") and "probing" in d.reason


def drifting(u: int, kl0: float, kl_per_u2: float) -> RoundRecord:
    """A round of U=u whose steps drift as approx KL = kl0 + c * step^2 (ESS and clipping healthy)."""
    steps = [{"ess": 0.99, "clip_frac": 0.0, "approx_kl": kl0 + kl_per_u2 * v * v} for v in range(u)]
    return RoundRecord(u, u * 32, 10.0, 0.1, 20.0, *late_health(steps), None, **step_series(steps))


def test_projection_extrapolates_a_quadratic_drift_to_the_late_steps_of_a_longer_round():
    ahead = projected([drifting(4, 0.001, 0.002)], 8)  # late steps of U=8: 6 and 7
    assert ahead.batch_ratio == 8 and ahead.inference_batch == 256
    assert ahead.late_approx_kl == pytest.approx(0.001 + 0.002 * (36 + 49) / 2)
    assert ahead.late_ess == pytest.approx(0.99) and ahead.late_clip_frac == 0.0
    # Rounds are pooled: one noisy round does not hide the drift the others show.
    noisy = [drifting(4, 0.001, 0.002), drifting(4, 0.001, 0.002), drifting(4, 0.001, 0.0)]
    assert projected(noisy, 8).late_approx_kl == pytest.approx(0.001 + 0.002 * 2 / 3 * (36 + 49) / 2)
    assert projected([drifting(1, 0.001, 0.002)], 2) is None  # one step: no drift to read
    assert projected([rec(4)], 8) is None  # a record from before the step series (old checkpoint)


def test_a_drift_that_would_be_unhealthy_at_twice_u_holds_instead_of_probing():
    # Late step 3 reads 0.0145 (under half of kl_max: healthy enough to grow), but steps 6-7 of a
    # round of 8 would read 0.065 > 0.05: the whole probe round would be spent drifting too far.
    d = next_batch_ratio([drifting(4, 0.001, 0.0015)], LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("hold U=4: not growing: at U=8")
    assert "approx KL 0.0648 > 0.0500 (fitted to the steps of 1 round)" in d.reason
    # A slow drift projects healthy: it probes as before.
    d = next_batch_ratio([drifting(4, 0.001, 0.0002)], LIM)
    assert d.batch_ratio == 8 and "probing" in d.reason


def test_grows_while_generation_flattens_and_goes_back_when_the_saving_is_small():
    # gen(B) = 8 s + 0.01 s x B: a per-round cost a larger batch amortises; training 0.05 s/sample.
    flat = [rec(u, gen_s=8 + 0.01 * u * 32, train_s=0.05 * u * 32) for u in (4, 8)]
    d = next_batch_ratio(flat, LIM)
    assert d.batch_ratio == 16 and "saves an estimated" in d.reason
    # gen(B) = 0.2 s + 0.05 s x B: nearly linear. U=8's batch saved ~0.8% of the round time per
    # sample over U=4's: back to 4 (staler steps for no time), and at 4 doubling is not worth it.
    linear = [rec(u, gen_s=0.2 + 0.05 * u * 32, train_s=0.05 * u * 32) for u in (4, 8)]
    d = next_batch_ratio(linear, LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("shrink U 8->4: B=256 saves an estimated 0.8%")
    assert "staler steps for no time" in d.reason
    d = next_batch_ratio([*linear, rec(4, gen_s=0.2 + 0.05 * 128, train_s=0.05 * 128)], LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("hold U=4: doubling B saves") and "< 3%" in d.reason


def test_a_larger_batch_that_generated_slower_per_sample_goes_back():
    # Measured on a 2-core CPU: B=64 took 1.8 s, B=128 4.4 s (no per-round cost to amortise).
    d = next_batch_ratio(
        [rec(4, gen_s=1.8, train_s=4.8), rec(8, gen_s=4.4, train_s=7.1)], Limits(16, 8, start=4)
    )
    assert d.batch_ratio == 4 and "saves an estimated 0.0%" in d.reason


@pytest.mark.parametrize(
    "health,word",
    [
        (dict(ess=0.5), "ESS 0.500 < 0.700"),
        (dict(clip=0.2), "clip fraction 0.200 > 0.050"),
        (dict(kl=0.3), "approx KL 0.3000 > 0.0500"),
    ],
)
def test_unhealthy_late_steps_halve_the_ratio_and_say_why(health, word):
    d = next_batch_ratio([rec(4), rec(8, **health)], LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("shrink U 8->4") and word in d.reason


def spiking(u: int, late_kl: float) -> RoundRecord:
    """A round of U=u that reads approx KL 0.001 but ``late_kl`` at its last quarter of steps."""
    late = max(1, u // 4)
    steps = [{"ess": 0.99, "clip_frac": 0.0, "approx_kl": 0.001}] * (u - late) + [
        {"ess": 0.99, "clip_frac": 0.0, "approx_kl": late_kl}
    ] * late
    return RoundRecord(u, u * 32, 10.0, 0.1, 20.0, *late_health(steps), None, **step_series(steps))


def test_a_lone_spike_after_healthy_rounds_holds_and_a_recurring_or_large_one_shrinks():
    healthy = [drifting(8, 0.001, 0.0002)] * 3  # late steps read ~0.0095
    d = next_batch_ratio([*healthy, spiking(8, 0.07)], LIM)
    assert d.batch_ratio == 8 and d.reason.startswith("hold U=8: late-step approx KL 0.0700 > 0.0500")
    assert "after a healthy round at U=8, and the steps of the last 4 rounds fit" in d.reason
    assert "approx KL 0.0207: a spike" in d.reason
    # Past twice the limit one round is enough.
    d = next_batch_ratio([*healthy, spiking(8, 0.12)], LIM)
    assert d.batch_ratio == 4 and d.reason == "shrink U 8->4: late-step approx KL 0.1200 > 0.0500"
    # Two in a row shrink.
    d = next_batch_ratio([*healthy, spiking(8, 0.07), spiking(8, 0.06)], LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("shrink U 8->4: late-step approx KL 0.0600")
    # So does a spike on top of a drift that already reads near the limit over the rounds kept.
    d = next_batch_ratio([drifting(8, 0.001, 0.0011)] * 2 + [spiking(8, 0.08)], LIM)  # late 0.0478
    assert d.batch_ratio == 4 and d.reason.startswith("shrink U 8->4: late-step approx KL 0.0800")
    # The first round at a grown U is a probe: drifting too far there shrinks at once.
    d = next_batch_ratio([drifting(4, 0.001, 0.0002)] * 3 + [spiking(8, 0.07)], LIM)
    assert d.batch_ratio == 4 and d.reason.startswith("shrink U 8->4")
    assert next_batch_ratio([spiking(8, 0.07)], LIM).batch_ratio == 4  # nothing to compare with


def test_generation_is_fitted_per_decode_step_so_shorter_completions_are_not_credited_to_b():
    # Per decode step gen = 0.2 ms + 0.05 ms x B (no batch saving), but the policy's completions
    # shortened from 128 to 40 tokens as U grew 4 -> 8: per round, B=256 looks far cheaper.
    def timed(u: int, steps: int) -> RoundRecord:
        gen = steps * (0.2 + 0.05 * u * 32) / 1e3
        return replace(rec(u, gen_s=gen, train_s=0.002 * u * 32), decode_steps=steps)

    shorter = [timed(4, 128), timed(8, 40)]
    d = next_batch_ratio(shorter, LIM)
    assert d.batch_ratio == 4 and "decode step = 0.2 ms + B x fit" in d.reason
    assert d.reason.startswith("shrink U 8->4: B=256 saves an estimated")
    # Without the steps (records from an older checkpoint) the fit is per round, as before.
    old = [replace(r, decode_steps=0) for r in shorter]
    assert next_batch_ratio(old, LIM).batch_ratio == 16


def test_between_the_shrink_and_grow_limits_it_holds():
    d = next_batch_ratio([rec(8, kl=0.03)], LIM)  # under kl_max 0.05, over half of it
    assert d.batch_ratio == 8 and d.reason.startswith("hold U=8: not growing") and "approx KL" in d.reason


def test_does_not_grow_back_to_a_ratio_that_was_unhealthy():
    d = next_batch_ratio([rec(4), rec(8, kl=0.3), rec(4)], LIM)
    assert d.batch_ratio == 4 and "U=8 had unhealthy late steps" in d.reason


def test_bounds_hold_at_the_largest_and_smallest_ratio():
    lim = Limits(32, 8, start=4, min_ratio=2, max_ratio=8)
    assert next_batch_ratio([rec(8)], lim).reason.startswith("hold U=8: at the largest U=8")
    d = next_batch_ratio([rec(2, kl=1.0)], lim)
    assert d.batch_ratio == 2 and "at the smallest U" in d.reason


def test_ratio_keeps_whole_prompt_groups():
    lim = Limits(mini_batch_size=4, group_size=8, start=4, min_ratio=1, max_ratio=16)
    assert ratio_unit(4, 8) == 2
    assert next_batch_ratio([], Limits(4, 8, start=4, min_ratio=1, max_ratio=3)).batch_ratio == 2
    d = next_batch_ratio([RoundRecord(2, 8, 1.0, 0.0, 1.0, 0.1, 0.0, 0.0)], lim)  # shrink would give 1
    assert d.batch_ratio == 2 and (d.batch_ratio * 4) % 8 == 0


def test_samples_left_cap_the_last_round():
    lim = Limits(32, 8, start=4, samples_left=96)
    d = next_batch_ratio([rec(4)], lim)
    assert d.batch_ratio == 3 and d.inference_batch(lim) == 96


def test_memory_near_full_shrinks_and_blocks_growth():
    lim = Limits(32, 8, start=4, mem_total_gb=80.0)
    assert next_batch_ratio([rec(8, mem=76.0)], lim).batch_ratio == 4
    d = next_batch_ratio([rec(8, mem=60.0)], lim)
    assert d.batch_ratio == 8 and "peak memory 75%" in d.reason
    assert next_batch_ratio([rec(8, mem=10.0)], lim).batch_ratio == 16


def test_late_health_reads_the_last_quarter_of_steps():
    steps = [{"ess": 1.0, "clip_frac": 0.0, "approx_kl": 0.0}] * 6 + [
        {"ess": 0.5, "clip_frac": 0.2, "approx_kl": 0.4}
    ] * 2
    assert late_health(steps) == (0.5, 0.2, 0.4)
    assert late_health(steps[:1]) == (1.0, 0.0, 0.0) and late_health([]) == (1.0, 0.0, 0.0)


def test_config_validates_the_auto_bounds():
    assert make_config().batch_ratio_control == "auto"
    with pytest.raises(ConfigError) as err:
        make_config(prompts_per_round=128)  # U = 32 > batch_ratio_max 16
    assert err.value.field == "batch_ratio_max"
    with pytest.raises(ConfigError) as err:
        make_config(batch_ratio_min=8, batch_ratio_max=4)
    assert err.value.field == "batch_ratio_min"
    assert make_config(prompts_per_round=128, batch_ratio_control="fixed").batch_ratio == 32
    assert make_config(algorithm="grpo", prompts_per_round=128).batch_ratio == 1  # baselines: B = m


def test_worker_event_of_a_decision():
    message, data = batch_decision({"round": 2, "batch_ratio": 8, "batch_decision": "grow U 4->8: probing"})
    assert message == "Round 2: batch ratio U=8: grow U 4->8: probing" and data["batch_ratio"] == 8
    assert batch_decision({"round": 2, "batch_ratio": 4, "batch_decision": ""}) is None


# --- the trainer --------------------------------------------------------------------------------------
def auto_run(out: Path, callbacks=None, **over) -> dict:
    values = dict(
        model="tiny-random",
        rounds=3,
        prompts_per_round=4,
        group_size=4,
        mini_batch_size=4,
        max_new_tokens=6,
        eval_problems=0,
        learning_rate=1e-6,
        dtype="fp32",
        batch_ratio_max=8,
        # Decisions from health alone (no timing), and every sample trains: the runs are deterministic.
        batch_ratio_min_gain=0.0,
        drop_zero_std=False,
    )
    return train(make_config(**(values | over)), RunPaths(output_dir=out), callbacks=callbacks)


def rounds_of(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "round"]


def test_trainer_changes_B_between_rounds_and_records_each_decision(tmp_path, tiny_model):
    # lr 1e-6 keeps the late steps on-policy: round 0 starts at U=4, round 1 probes U=8, round 2 stays
    # at batch_ratio_max 8.
    summary = auto_run(tmp_path)
    rounds = rounds_of(tmp_path)
    assert [r["batch_ratio"] for r in rounds] == [4, 8, 8]
    assert rounds[0]["batch_decision"] == "start at U=4"
    assert "probing" in rounds[1]["batch_decision"] and "at the largest U=8" in rounds[2]["batch_decision"]
    assert [r["samples"] for r in rounds] == [16, 48, 80] and summary["steps"] == 4 + 8 + 8
    state = torch.load(tmp_path / "checkpoints" / "round-000003" / "state.pt", weights_only=False)
    assert state["position"] == 80 // 4 and [r["batch_ratio"] for r in state["batch_history"]] == [4, 8, 8]
    # The time rule's fit is per decode step: each record holds its round's longest completion.
    assert [r["decode_steps"] for r in state["batch_history"]] == [r["completion_len_max"] for r in rounds]
    assert all(0 < r["decode_steps"] <= 6 for r in state["batch_history"])


def test_max_samples_caps_the_last_round(tmp_path, tiny_model):
    summary = auto_run(tmp_path, rounds=None, max_samples=40)
    assert [r["batch_ratio"] for r in rounds_of(tmp_path)] == [4, 6] and summary["samples"] == 40


class CancelAfter(Callback):
    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_round(self, metrics):
        self.seen += 1

    def should_stop(self):
        return "cancel" if self.seen >= self.n else None


def test_resume_restores_the_controller_and_matches_the_uninterrupted_run(tmp_path, tiny_model):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    auto_run(whole)
    with pytest.raises(Cancelled):
        auto_run(broken, callbacks=[CancelAfter(2)])
    auto_run(broken)
    a = load_file(whole / "checkpoints" / "round-000003" / "trainable.safetensors")
    b = load_file(broken / "checkpoints" / "round-000003" / "trainable.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    decisions = [(r["batch_ratio"], r["batch_decision"]) for r in rounds_of(whole)]
    assert [(r["batch_ratio"], r["batch_decision"]) for r in rounds_of(broken)] == decisions
