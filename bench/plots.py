"""PNG plots of a ``compare`` result: train reward and held-out accuracy against wall time per
algorithm, and the wall-time split (generation / reward / training / other) as stacked bars.

    python bench/plots.py [bench/results/compare.json] [--out-dir docs/img]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = (("gen_s", "generation"), ("reward_s", "reward"), ("train_s", "training"), ("other_s", "other"))


def curves(result: dict, out: Path) -> Path:
    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in result["algorithms"].items():
        c = row["curve"]
        ax_r.plot([p["wall_s"] for p in c], [p["reward_mean"] for p in c], marker="o", label=name)
        pts = row.get("tta_curve") or []
        if pts:
            ax_a.plot([p["wall_s"] for p in pts], [p["pass@1"] for p in pts], marker="o", label=name)
        else:  # no per-round evaluation: before and after only
            before, after = row.get("eval_before") or {}, row.get("eval_after") or {}
            if "pass@1" in before and "pass@1" in after:
                ax_a.plot([0, row["wall_s"]], [before["pass@1"], after["pass@1"]], marker="o", label=name)
    target = result.get("tta_target_pass@1")
    if target is not None:
        ax_a.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
    ax_r.set(
        xlabel="training wall time (s)", ylabel="train reward (mean per round)", title="reward vs wall time"
    )
    ax_a.set(xlabel="training wall time (s)", ylabel="held-out greedy pass@1", title="accuracy vs wall time")
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "compare_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def split_bars(result: dict, out: Path) -> Path:
    names = list(result["algorithms"])
    rows = [result["algorithms"][n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0.0] * len(rows)
    for key, label in PARTS:
        vals = [r[key] for r in rows]
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    if result.get("trl"):  # TRL's time is not split: per-sample time x the same number of samples
        ax.bar(
            ["TRL GRPOTrainer"],
            [result["trl"]["per_sample_s"] * rows[0]["samples"]],
            color="grey",
            label="TRL total (per-sample s x samples)",
        )
    machine = result.get("machine", {})
    ax.set(
        ylabel="wall time (s)",
        title=f"time split, {rows[0]['samples']} samples each "
        f"(load {machine.get('load_avg_1_5_15', ['?'])[0]})",
    )
    ax.legend()
    fig.tight_layout()
    path = out / "compare_split.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", nargs="?", default=str(ROOT / "bench" / "results" / "compare.json"))
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "img"))
    args = p.parse_args()
    result = json.loads(Path(args.result).read_text())
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in (curves(result, out), split_bars(result, out)):
        print(f"saved {path}")


if __name__ == "__main__":
    main()
