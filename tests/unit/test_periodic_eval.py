"""Held-out evaluation every eval_interval steps and the best checkpoint (rapid_core/periodic_eval.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from peft import PeftConfig
from test_trainer_loop import CancelAfterRounds, records, strip_timing, tiny_cfg, tiny_run

from rapid_core.callbacks import Callback
from rapid_core.errors import Cancelled
from rapid_core.graders.base import Grade, Grader, register_grader
from rapid_core.metrics import EvalMetrics
from rapid_core.periodic_eval import PeriodicEval, evaluation_due, is_better
from rapid_core.state import Progress


@register_grader("test_vowels_never_pass")
class VowelsNeverPass(Grader):
    """Rewards that vary (a learning signal) but no pass: every held-out evaluation scores 0."""

    def grade(self, item, output_text):
        return Grade(sum(c in "aeiou" for c in output_text) / max(len(output_text), 1), "wrong")


class Saved(Callback):
    def __init__(self):
        self.rounds = []

    def on_checkpoint(self, path, round_index):
        self.rounds.append(round_index)


def test_due_at_the_first_round_boundary_at_or_after_each_multiple_and_at_the_end():
    cfg = tiny_cfg(eval_interval=6)  # U = 4: boundaries at steps 4, 8, 12, 16, 20
    p, due = Progress(), []
    for step in (4, 8, 12, 16, 20):
        p.step, p.round = step, step // 4
        if evaluation_due(cfg, p, finished=step == 20):
            due.append(step)
            p.last_eval = {"step": step, "round": p.round, "pass@1": 0.0}
    assert due == [8, 12, 20]
    p.step = 22  # the last boundary is always evaluated, once
    assert evaluation_due(cfg, p, finished=True) and not evaluation_due(cfg, p, finished=False)
    p.last_eval["step"] = 22
    assert not evaluation_due(cfg, p, finished=True)
    assert not evaluation_due(tiny_cfg(), Progress(step=100), finished=True)  # no eval_interval
    assert not evaluation_due(tiny_cfg(eval_interval=1, eval_problems=0), Progress(step=8), finished=True)


def test_best_is_the_highest_pass_at_1_and_the_earlier_on_a_tie(tmp_path):
    assert is_better(0.0, None) and is_better(0.5, {"pass@1": 0.4})
    assert not is_better(0.4, {"pass@1": 0.4}) and not is_better(0.3, {"pass@1": 0.4})
    scores = iter([0.25, 0.5, 0.5, 0.375, 0.75, 0.75])
    seen = []

    def scripted(phase):
        seen.append(phase)
        return EvalMetrics(8, next(scores), 0.0, {}, {}, 0.0)

    periodic = PeriodicEval(tiny_cfg(eval_interval=1), tmp_path, scripted)
    state = SimpleNamespace(progress=Progress(), finished=False)
    bests = []
    for r in range(1, 7):
        state.progress.step, state.progress.round = 2 * r, r
        periodic.at_boundary(state)
        bests.append(state.progress.best["round"])
    assert seen == ["interval"] * 6 and bests == [1, 2, 2, 2, 5, 5]
    best = state.progress.best
    assert best == {
        "step": 10,
        "round": 5,
        "pass@1": 0.75,
        "problems": 8,
        "checkpoint": str(tmp_path / "round-000005"),
        "adapter_dir": str(tmp_path / "round-000005" / "adapter"),
    }
    assert periodic.final(state.progress).pass_at_1 == 0.75  # the evaluation at this step, reused as "after"
    state.progress.step += 1
    assert periodic.final(state.progress) is None


def test_trainer_evaluates_every_interval_checkpoints_there_and_keeps_the_best(tmp_path, tiny_model):
    saved = Saved()
    summary = tiny_run(
        tmp_path, callbacks=[saved], rounds=5, eval_interval=6, checkpoint_every=10, keep_checkpoints=1
    )
    evals = records(tmp_path, "eval")
    interval = [e for e in evals if e["phase"] == "interval"]
    assert [(e["step"], e["round"]) for e in interval] == [(8, 2), (12, 3), (20, 5)]
    assert [e["phase"] for e in evals] == ["before", "interval", "interval", "interval", "after"]
    # The final weights were evaluated at step 20 already: "after" is that evaluation, not a rerun.
    assert evals[-1] == {**interval[-1], "phase": "after"}
    assert evals[0]["step"] == 0 and evals[0]["round"] == 0
    assert summary["eval_after"] == {k: v for k, v in interval[-1].items() if k not in ("kind", "phase")}
    # Every evaluation's weights were checkpointed (checkpoint_every=10 alone would give only round 5).
    assert saved.rounds == [2, 3, 5]

    best = summary["best"]
    scores = [e["pass@1"] for e in interval]
    first_top = scores.index(max(scores))  # the earlier one on a tie
    assert (best["step"], best["round"], best["pass@1"]) == (
        interval[first_top]["step"],
        interval[first_top]["round"],
        max(scores),
    )
    assert json.loads((tmp_path / "best.json").read_text()) == best
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == sorted({"round-000005", f"round-{best['round']:06d}"})  # keep_checkpoints=1, plus the best
    assert PeftConfig.from_pretrained(best["adapter_dir"]).r == tiny_cfg().lora_r
    assert Path(summary["adapter_dir"]).is_dir()  # the final adapter stays the last weights


def test_the_best_survives_rotation_when_it_is_old(tmp_path, tiny_model):
    """The random model's greedy pass@1 does not move off 0 here: every evaluation ties, so the best
    stays the first one while keep_checkpoints=1 rotates everything after it."""
    summary = tiny_run(
        tmp_path,
        rounds=4,
        eval_interval=4,
        keep_checkpoints=1,
        eval_problems=2,
        grader={"type": "test_vowels_never_pass"},
    )
    assert [e["pass@1"] for e in records(tmp_path, "eval") if e["phase"] == "interval"] == [0.0] * 4
    assert summary["best"]["round"] == 1 and summary["best"]["step"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-000001", "round-000004"]
    assert (tmp_path / "checkpoints" / "round-000001" / "adapter" / "adapter_config.json").is_file()


def test_resume_keeps_the_best_and_the_evaluations(tmp_path, tiny_model):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    over = dict(rounds=5, eval_interval=6, keep_checkpoints=1, grader={"type": "test_vowels_never_pass"})
    expected = tiny_run(whole, **over)
    with pytest.raises(Cancelled):
        tiny_run(broken, callbacks=[CancelAfterRounds(3)], **over)
    assert json.loads((broken / "best.json").read_text())["round"] == 2
    resumed = tiny_run(broken, **over)
    assert resumed["best"]["round"] == expected["best"]["round"] == 2
    assert (broken / "checkpoints" / "round-000002" / "adapter").is_dir()
    assert [strip_timing(r) for r in records(whole, "eval")] == [
        strip_timing(r) for r in records(broken, "eval")
    ]
