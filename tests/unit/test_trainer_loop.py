"""The RAPID loop on a tiny random model: shapes of a round, staleness, resume, cancel, baselines."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rapid_core.callbacks import Callback
from rapid_core.config import RunPaths, make_config
from rapid_core.errors import Cancelled, ConfigError
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.plan import plan_minibatches, prompt_indices
from rapid_core.trainer import train


@register_grader("test_vowel_share")
class VowelShare(Grader):
    """A random model never answers right; a score that varies by sample gives a learning signal."""

    def grade(self, item, output_text):
        score = sum(c in "aeiou" for c in output_text) / max(len(output_text), 1)
        return Grade(score, self.classify(score))


TIMING = {
    "gen_s",
    "reward_s",
    "train_s",
    "round_s",
    "gen_tokens_per_s",
    "samples_per_s",
    "seconds",
    "prefill_s",
    "decode_s",
    "decode_ms_per_step",
}


def tiny_cfg(**over):
    values = dict(
        model="tiny-random",
        rounds=3,
        prompts_per_round=4,
        group_size=4,
        mini_batch_size=4,
        batch_ratio_control="fixed",
        max_new_tokens=6,
        eval_problems=4,
        eval_k=2,
        learning_rate=1e-2,
        temperature=1.0,
        dtype="fp32",
        grader={"type": "test_vowel_share"},
    )
    values.update(over)
    return make_config(**values)


def tiny_run(tmp: Path, callbacks=None, **over) -> dict:
    """Train the tiny model with the test grader (staleness-0 checks hold in fp32) into ``tmp``."""
    return train(tiny_cfg(**over), RunPaths(output_dir=tmp), callbacks=callbacks)


def records(out: Path, kind: str) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == kind]


def strip_timing(rec: dict) -> dict:
    """The record without wall-clock figures (also those nested in the engine's stats)."""
    return {k: strip_timing(v) if isinstance(v, dict) else v for k, v in rec.items() if k not in TIMING}


def test_round_has_U_steps_with_staleness_0_to_U_minus_1(tmp_path, tiny_model):
    cfg = tiny_cfg()
    summary = train(cfg, RunPaths(output_dir=tmp_path))
    assert cfg.batch_ratio == 4 and summary["steps"] == 3 * 4 and summary["samples"] == 3 * 16
    steps = records(tmp_path, "step")
    for k in range(3):
        assert [s["staleness"] for s in steps if s["round"] == k] == [0, 1, 2, 3]
    rounds = records(tmp_path, "round")
    assert [r["staleness_mean"] for r in rounds] == [1.5] * 3 and {r["staleness_max"] for r in rounds} == {3}
    for key in (
        "loss",
        "grad_norm",
        "lr",
        "w_mean",
        "w_min",
        "w_max",
        "clip_frac",
        "ess",
        "approx_kl",
        "entropy",
    ):
        assert all(key in s for s in steps), key
    for key in (
        "reward_mean",
        "reward_std",
        "accuracy",
        "frac_zero_std",
        "completion_len_mean",
        "completion_len_max",
        "truncated_share",
        "gen_s",
        "reward_s",
        "train_s",
        "gen_tokens_per_s",
        "samples_per_s",
    ):
        assert all(key in r for r in rounds), key
    # The policy moved: later steps of a round see weights different from 1.
    assert any(abs(s["w_mean"] - 1) > 1e-4 for s in steps if s["staleness"] > 0)
    out = Path(summary["adapter_dir"])
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert {e["phase"] for e in records(tmp_path, "eval")} == {"before", "after"}


def test_behaviour_logprobs_from_sampling_match_training_logprobs_at_step_zero(tmp_path, tiny_model):
    tiny_run(tmp_path, rounds=2)
    for s in records(tmp_path, "step"):
        if s["staleness"] == 0:  # pi_theta == mu: fp32 numerics only
            assert s["w_mean"] == pytest.approx(1.0, abs=1e-4)
            assert s["approx_kl"] == pytest.approx(0.0, abs=1e-6)


class CancelAfterRounds(Callback):
    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_round(self, metrics):
        self.seen += 1

    def should_stop(self):
        return "cancel" if self.seen >= self.n else None


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_after_round_2_matches_uninterrupted_run(tmp_path, tiny_model, schedule):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    tiny_run(whole, rounds=4, lr_schedule=schedule)
    with pytest.raises(Cancelled) as stopped:
        tiny_run(broken, callbacks=[CancelAfterRounds(2)], rounds=4, lr_schedule=schedule)
    assert stopped.value.request == "cancel"
    assert (broken / "checkpoints" / "round-000002").is_dir()
    tiny_run(broken, rounds=4, lr_schedule=schedule)

    a = load_file(whole / "checkpoints" / "round-000004" / "trainable.safetensors")
    b = load_file(broken / "checkpoints" / "round-000004" / "trainable.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for kind in ("step", "round", "eval"):
        assert [strip_timing(r) for r in records(whole, kind)] == [
            strip_timing(r) for r in records(broken, kind)
        ]


def test_cancel_keeps_the_last_checkpoint_and_metrics(tmp_path, tiny_model):
    with pytest.raises(Cancelled):
        tiny_run(tmp_path, callbacks=[CancelAfterRounds(1)], rounds=5, eval_problems=0)
    assert (tmp_path / "checkpoints" / "round-000001" / "adapter" / "adapter_config.json").is_file()
    assert len(records(tmp_path, "round")) == 1


@pytest.mark.parametrize("algorithm", ["grpo", "pg"])
def test_baselines_take_one_step_per_round_on_fresh_samples(tmp_path, tiny_model, algorithm):
    cfg = tiny_cfg(algorithm=algorithm, rounds=2, eval_problems=0, mini_batch_size=8)
    assert cfg.inference_batch == 8 and cfg.batch_ratio == 1
    summary = train(cfg, RunPaths(output_dir=tmp_path))
    assert summary["steps"] == 2 and summary["samples"] == 16
    steps = records(tmp_path, "step")
    assert [s["staleness"] for s in steps] == [0, 0]
    assert all(s["w_mean"] == pytest.approx(1.0, abs=1e-4) for s in steps)


def test_stops_on_total_samples(tmp_path, tiny_model):
    summary = tiny_run(tmp_path, rounds=None, max_samples=40, eval_problems=0)
    assert summary["samples"] == 48 and summary["rounds"] == 3  # first round boundary at or past 40


def test_prompt_stream_is_a_pure_function_of_position():
    first = prompt_indices(10, 0, 25, seed=3)
    assert prompt_indices(10, 7, 5, seed=3) == first[7:12]
    assert sorted(first[:10]) == list(range(10))  # each epoch is a permutation
    assert prompt_indices(10, 0, 10, seed=4) != first[:10]


@register_grader("test_always_broken")
class AlwaysBroken(Grader):
    def grade(self, item, output_text):
        return Grade(0.0, "error", "checker crashed: KeyError 'tests'")


def test_a_checker_failing_on_most_samples_fails_the_run_with_a_clear_message(tmp_path, tiny_model):
    from rapid_core.errors import GraderError

    with pytest.raises(GraderError, match="grader failed on 16 of 16 samples"):
        tiny_run(tmp_path, grader={"type": "test_always_broken"}, eval_problems=0)


def test_group_shuffling_puts_whole_prompt_groups_in_each_mini_batch():
    cfg = tiny_cfg(minibatch_grouping="groups", mini_batch_size=8)
    minibatches = plan_minibatches(cfg, torch.zeros(4, dtype=torch.bool), round_index=0)
    assert len(minibatches) == 2 and sorted(i for mb in minibatches for i in mb) == list(range(16))
    for mb in minibatches:  # group_size 4: each mini-batch of 8 is two whole groups
        groups = {i // 4 for i in mb}
        assert len(groups) == 2 and all(sum(i // 4 == g for i in mb) == 4 for g in groups)


def test_sample_shuffling_is_seeded_per_round_and_drops_groups_without_signal():
    cfg = tiny_cfg(drop_zero_std=True)
    zero_std = torch.tensor([False, True, False, False])
    plan = plan_minibatches(cfg, zero_std, round_index=3)
    assert plan == plan_minibatches(cfg, zero_std, round_index=3) != plan_minibatches(cfg, zero_std, 4)
    kept = sorted(i for mb in plan for i in mb)
    assert kept == [i for i in range(16) if i // 4 != 1] and [len(mb) for mb in plan] == [4, 4, 4]


def test_cut_samples_are_left_out_only_with_mask_truncated():
    truncated = torch.zeros(16, dtype=torch.bool)
    truncated[[0, 5, 15]] = True
    zero_std = torch.tensor([False, True, False, False])
    plan = plan_minibatches(tiny_cfg(drop_zero_std=True, mask_truncated=True), zero_std, 0, truncated)
    assert sorted(i for mb in plan for i in mb) == [i for i in range(16) if i // 4 != 1 and i not in (0, 15)]
    plan = plan_minibatches(tiny_cfg(drop_zero_std=True), zero_std, 0, truncated)
    assert sorted(i for mb in plan for i in mb) == [i for i in range(16) if i // 4 != 1]


def test_overlong_buffer_longer_than_max_new_tokens_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="overlong_buffer: must be <= max_new_tokens"):
        tiny_cfg(overlong_buffer=7)


def test_overlong_penalty_is_added_to_the_rewards_and_reported_per_round(tmp_path, tiny_model):
    # buffer = max_new_tokens: every sample loses len / 6, so the round's mean penalty is -mean len / 6
    tiny_run(tmp_path / "pen", overlong_buffer=6, rounds=2, eval_problems=0)
    tiny_run(tmp_path / "off", rounds=2, eval_problems=0)
    pen, off = records(tmp_path / "pen", "round"), records(tmp_path / "off", "round")
    for r in pen:
        assert r["overlong_penalty_mean"] < 0
        assert r["overlong_penalty_mean"] == pytest.approx(-r["completion_len_mean"] / 6)
    assert [r["overlong_penalty_mean"] for r in off] == [0.0, 0.0]
    # the grader's own scores are what the round reports as reward; the penalty only moves advantages
    assert pen[0]["reward_mean"] == off[0]["reward_mean"]
    assert [s["loss"] for s in records(tmp_path / "pen", "step")] != [
        s["loss"] for s in records(tmp_path / "off", "step")
    ]


@pytest.mark.parametrize(
    "values,drops",
    [
        ({}, True),  # rapid's default: all-equal groups add no gradient, only time
        ({"kl_beta": 0.1}, False),  # the KL penalty still has a gradient on them
        ({"drop_zero_std": False}, False),
        ({"algorithm": "grpo"}, False),  # the baselines run as they do elsewhere
        ({"algorithm": "pg"}, False),
        ({"algorithm": "grpo", "drop_zero_std": True}, True),
    ],
)
def test_groups_without_signal_are_left_out_by_default_for_rapid_only(values, drops):
    base = {} if "algorithm" in values else {"prompts_per_round": 4}
    cfg = tiny_cfg(**(base | values))
    assert cfg.drops_zero_std is drops
    plan = plan_minibatches(cfg, torch.tensor([False, True, False, False]), round_index=0)
    assert (5 in {i for mb in plan for i in mb}) is not drops  # sample 5 is in the all-equal group


@register_grader("test_constant")
class Constant(Grader):
    """Every sample scores the same: every group is all-equal, no sample has a gradient."""

    def grade(self, item, output_text):
        return Grade(0.0, "wrong")


def test_a_rapid_run_of_all_equal_groups_trains_no_step_by_default(tmp_path, tiny_model):
    summary = tiny_run(tmp_path, rounds=2, grader={"type": "test_constant"}, eval_problems=0)
    rounds = records(tmp_path, "round")
    assert summary["steps"] == 0 and summary["samples"] == 2 * 16 and len(rounds) == 2
    assert all(r["frac_zero_std"] == 1.0 for r in rounds) and records(tmp_path, "step") == []
    kept = tiny_run(
        tmp_path / "kept", rounds=2, grader={"type": "test_constant"}, eval_problems=0, drop_zero_std=False
    )
    assert kept["steps"] == 2 * 4  # U = 4 steps a round when every group trains


def test_checkpoints_every_n_rounds_and_after_the_last(tmp_path, tiny_model):
    seen = []

    class Saved(Callback):
        def on_checkpoint(self, path, round_index):
            seen.append((Path(path).name, round_index))

    tiny_run(tmp_path, callbacks=[Saved()], rounds=3, checkpoint_every=2, eval_problems=0)
    assert seen == [("round-000002", 2), ("round-000003", 3)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-000002", "round-000003"]


def test_run_files_hold_a_config_that_reruns_the_same_run_and_the_summary(tmp_path, tiny_model):
    from rapid_core.cli import build_parser, config_from_args

    summary = tiny_run(tmp_path, rounds=1, eval_problems=0)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "config.json")])
    cfg, paths = config_from_args(args)
    assert cfg == tiny_cfg(rounds=1, eval_problems=0) and paths == RunPaths(output_dir=tmp_path)


def test_training_log_probs_come_from_the_sampling_policy_without_dropout(tmp_path, tiny_model):
    """A model whose config has attention dropout: the training pass must run without it (eval mode),
    else the policy trained differs from the policy that sampled and w != 1 at staleness 0."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rapid_core.models import ensure_tiny_model

    source, model_dir = ensure_tiny_model(), tmp_path / "dropout-model"
    config = AutoConfig.from_pretrained(source)
    config.attention_dropout = 0.5
    AutoModelForCausalLM.from_pretrained(source, config=config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(source).save_pretrained(model_dir)
    tiny_run(
        tmp_path / "run", model=str(model_dir), finetune="full", rounds=1, eval_problems=0, mini_batch_size=16
    )
    (step,) = records(tmp_path / "run", "step")
    assert step["staleness"] == 0 and step["w_min"] == pytest.approx(1.0, abs=1e-4)
    assert step["w_max"] == pytest.approx(1.0, abs=1e-4) and step["approx_kl"] == pytest.approx(0.0, abs=1e-6)


def test_micro_batch_chunks_add_up_to_the_whole_mini_batch(tiny_model):
    from dataclasses import replace

    from rapid_core.engines import Sampling, make_engine
    from rapid_core.losses import LOSSES
    from rapid_core.models import load_policy, prompt_token_ids
    from rapid_core.update import accumulate_gradient

    cfg = tiny_cfg(is_clip=1.05)
    policy = load_policy(cfg)
    prompts = [prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in ("1+1", "2+3")]
    torch.manual_seed(0)
    rollouts = make_engine(cfg, policy).generate(prompts, 3, Sampling(1.0, 6))
    gen = torch.Generator().manual_seed(1)
    # A stale behaviour policy, so that weights differ from 1 and some are truncated at c.
    stale = [
        [lp + 0.2 * float(torch.randn(1, generator=gen)) for lp in row] for row in rollouts.behaviour_logps
    ]
    rollouts = replace(rollouts, behaviour_logps=stale)
    adv = torch.randn(6, generator=gen)
    results = []
    for chunk in (0, 2):
        for p in policy.trainable_parameters():
            p.grad = None
        grad = accumulate_gradient(
            policy,
            rollouts,
            adv,
            list(range(6)),
            tiny_cfg(is_clip=1.05, train_micro_batch=chunk),
            LOSSES.get("rapid"),
        )
        results.append((grad, [p.grad.clone() for p in policy.trainable_parameters()]))
    (whole, g_whole), (chunked, g_chunked) = results
    for a, b in zip(g_whole, g_chunked, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert chunked.loss == pytest.approx(whole.loss, abs=1e-6) and chunked.tokens == whole.tokens
    for key in ("w_mean", "w_min", "w_max", "clip_frac", "approx_kl"):  # ess: a mean of chunk ESS
        assert chunked.metrics[key] == pytest.approx(whole.metrics[key], abs=1e-6), key
    assert 0 < whole.metrics["clip_frac"] < 1 and whole.metrics["w_min"] < 1


def test_round_metrics_carry_what_the_engine_measured():
    from rapid_core.engines import Rollouts
    from rapid_core.graders import Grade
    from rapid_core.metrics import RoundClock, round_metrics
    from rapid_core.state import Progress

    rollouts = Rollouts(
        [[1]] * 2,
        [[5, 2], [6]],
        [[-0.1, -0.2], [-0.3]],
        ["ab", "c"],
        ["stop", "length"],
        stats={"decode_ms_per_step": 3.5, "peak_gpu_memory_gb": 1.25},
    )
    m = round_metrics(
        Progress(round=2, step=8, samples=6),
        rollouts,
        [Grade(1.0, "ok"), Grade(0.0, "wrong")],
        torch.tensor([False]),
        1,
        RoundClock(0.0, 1.0, 1.5, 2.0),
    )
    assert m.engine == {"decode_ms_per_step": 3.5, "peak_gpu_memory_gb": 1.25}
    record = m.to_dict()
    assert record["engine"] == m.engine and record["round"] == 2 and record["truncated_share"] == 0.5
    assert record["gen_tokens_per_s"] == 3.0 and record["staleness_max"] == 0 and record["accuracy"] == 0.5
