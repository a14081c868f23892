"""The statistics bench/time_to_accuracy.py reports: time to a target, "held from", and the seed-paired
comparison of an auto setting with a fixed one (docs/benchmarks.md quotes these figures)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import time_to_accuracy as tta  # noqa: E402


def curve(*points: tuple[float, float]) -> list[dict[str, float]]:
    return [{"wall_s": w, "samples": 64 * i, "pass@1": p} for i, (w, p) in enumerate(points)]


def run(setting: str, seed: int, reach_at: float | None, final: float) -> dict:
    # Evaluations every 10 s; the subset reaches 0.3 at ``reach_at`` and keeps it (never when None).
    points = [(w, 0.35 if reach_at is not None and w >= reach_at else 0.1) for w in range(0, 101, 10)]
    return {"setting": setting, "seed": seed, "subset_curve": curve(*points), "pass@1_after": final}


def test_time_to_and_held_from_tell_touching_from_keeping():
    c = curve((0, 0.1), (10, 0.3), (20, 0.2), (30, 0.31), (40, 0.4))
    assert tta.time_to(c, 0.3) == 10
    assert tta.time_to(c, 0.3, "samples") == 64
    assert tta.held_from(c, 0.3) == 30  # the dip at 20 s restarts the clock
    assert tta.held_from(curve((0, 0.1), (10, 0.5), (20, 0.2)), 0.3) is None
    assert tta.time_to(c, 0.5) is None


def test_paired_ratio_wins_and_final_difference():
    runs = [
        run("rapid:auto", 0, 20, 0.40),
        run("rapid:auto", 1, 40, 0.50),
        run("rapid:auto", 2, 60, 0.45),
        run("rapid:U=4", 0, 40, 0.30),
        run("rapid:U=4", 1, 40, 0.40),
        run("rapid:U=4", 2, None, 0.35),  # never reaches: auto was first on this seed
        run("rapid:U=4", 3, 10, 0.30),  # no auto run of seed 3: not paired
    ]
    (row,) = tta.paired_all(runs, 0.3)
    assert (row["a"], row["b"], row["seeds"], row["both_reach"]) == ("rapid:auto", "rapid:U=4", 3, 2)
    assert row["time_ratio"] == pytest.approx(30 / 40)  # seeds 0 and 1 only
    lo, hi = row["time_ratio_90"]
    assert lo <= row["time_ratio"] <= hi and lo >= 0.5 and hi <= 1.0  # resamples of (20, 40) vs (40, 40)
    assert row["first"] == {"earlier": 2, "later": 0, "tied": 1}
    # Restricted: every paired seed, U=4's seed 2 counted at its last evaluation (100 s).
    assert row["restricted_ratio"] == pytest.approx((20 + 40 + 60) / (40 + 40 + 100))
    lo, hi = row["restricted_ratio_90"]
    assert lo <= row["restricted_ratio"] <= hi
    assert row["final_diff"] == pytest.approx(0.1)
    assert row["final_diff_90"][0] == pytest.approx(0.1) and row["final_diff_90"][1] == pytest.approx(0.1)


def test_paired_needs_two_seeds_both_reaching_for_a_ratio():
    runs = [run("rapid:auto", 0, 20, 0.4), run("rapid:U=8", 0, 30, 0.4), run("rapid:U=8", 1, 30, 0.4)]
    (row,) = tta.paired_all(runs, 0.3)
    assert row["both_reach"] == 1 and "time_ratio" not in row and "final_diff" not in row
    assert row["first"] == {"earlier": 1, "later": 0, "tied": 0}


def test_summary_carries_the_paired_rows_only_with_a_target():
    runs = [
        {**run(s, seed, 20, 0.4), **{k: 1.0 for k in ("wall_s", "cpu_s", "gen_s", "reward_s", "train_s")}}
        for s in ("rapid:auto", "rapid:U=8")
        for seed in (0, 1)
    ]
    for r in runs:
        r.update(other_s=0.0, samples=640, rounds_detail=[])
    assert [p["b"] for p in tta.summarise(runs, 0.3)["paired"]] == ["rapid:U=8"]
    assert "paired" not in tta.summarise(runs, None)


def test_from_results_summarises_a_saved_sweep_again_keeping_its_machine(tmp_path):
    runs = [
        {**run(s, seed, at, 0.4), **{k: 1.0 for k in ("wall_s", "cpu_s", "gen_s", "reward_s", "train_s")}}
        for s, at in (("rapid:auto", 20), ("rapid:U=8", None))
        for seed in (0, 1)
    ]
    for r in runs:
        r.update(other_s=0.0, samples=640, rounds_detail=[])
    saved = {
        "machine": {"cpu": "elsewhere"},
        "settings": {"seeds": [0, 1]},
        "summary": {"target": 0.3},
        "runs": runs,
    }
    src = tmp_path / "sweep.json"
    src.write_text(json.dumps(saved))
    tta.report(json.loads(src.read_text()), None, str(src), str(tmp_path / "plot.png"))
    again = json.loads(src.read_text())
    assert again["machine"] == {"cpu": "elsewhere"} and again["runs"] == runs
    (row,) = again["summary"]["paired"]
    assert row["both_reach"] == 0 and "time_ratio" not in row  # U=8 never reaches
    assert row["restricted_ratio"] == pytest.approx(20 / 100)
    assert (tmp_path / "plot.png").is_file()
