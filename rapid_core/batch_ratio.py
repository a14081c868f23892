"""``batch_ratio_control=auto``: the next round's batch ratio U (B = U * m) from what the last rounds
measured. A pure function of the rounds' records, so a checkpoint stores the records and a resumed
run makes the same decision.

Why it can pay to change U (RAPID.md): a round costs gen(B) + reward(B) + U x train_step. Training
costs the same per sample at any U; generation per sample falls as B grows (a decode step costs
nearly the same at batch 32 and 256 on a GPU) and flattens. So a larger U saves generation time,
but the late steps of a round train further off-policy: their importance weights spread (ESS falls,
more are truncated, the KL between sampler and learner grows). The policy:

1. shrink (U / 2) when the last round's late steps were unhealthy (ESS under ``ess_min``, clip
   fraction over ``clip_max`` or approx KL over ``kl_max``) and that is not a lone spike, or GPU
   memory ran near full. A lone spike holds instead: a reading under twice the limits after a
   healthy round at the same U, while the drift fitted over the steps of all the rounds kept (the
   projection below, read at this U) stays healthy. One round's late steps are two to four
   mini-batches, and on long completions single rounds read approx KL 0.05-0.09 among healthy ones:
   in 8 of 12 long-completion runs one such round halved U, most for the rest of the run. Two
   unhealthy rounds in a row, one past twice the limits, or the first round at a newly grown U
   (a probe that drifts too far) shrink at once;
2. grow (U x 2) when the late steps were comfortably healthy (stricter thresholds: no flapping),
   the larger U was not unhealthy before, the late steps of a round twice as long are projected to
   stay healthy, memory has room, and doubling B is expected to save at least ``min_gain`` of the
   round's time per sample: generation is fitted per decode step, gen(B) / steps = a + b * B over
   the rounds seen (a is the per-step cost a larger batch amortises; steps is the round's longest
   completion, as the decode loop runs until its last row ends), and with one batch size measured
   so far the larger one is probed once. Per step, because completions shorten as a policy learns
   (measured on worked-step answers: 0.25 s of generation per sample in the first rounds, 0.04 s in
   the last, at the same B), so a per-round fit credits to B what the shorter completions saved;
   once two batch sizes are measured, a U grown above the first one shrinks back (U / 2) when its
   batch saves less than ``min_gain`` over half of it: a larger U that buys no time only trains
   staler steps (on a 2-core CPU generation per sample stops falling near B = 64: measured 0.028 s
   at B = 64, 0.034 s at B = 128);
3. hold otherwise. U stays within [min, max], B within the samples left before ``max_samples``.

The projection: step u of a round trains u updates away from mu, so its token log-ratios spread
about u times as wide as one update's. approx KL and 1 - ESS are second moments of that spread and
grow ~u^2; the clip fraction is read the same way (it grows at least that fast once ratios near c).
Each is fitted as x_u = x_0 + c * u^2 over the steps of the rounds in the history (a single round's
mini-batches are too noisy: one measured run read 0.003 0.004 0.024 0.004) and read at the late steps
of a round of 2U. Without it, the first grow was a whole round at 2U spent only to learn it drifts too far
(measured on CPU: after a healthy U=4 round, late approx KL 0.09-0.18 at U=8, then back to 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from math import gcd
from typing import Any

from rapid_core.config import TrainConfig

HISTORY = 8  # rounds of records kept (and checkpointed)


@dataclass(frozen=True)
class RoundRecord:
    """What one round measured, as the controller reads it."""

    batch_ratio: int
    inference_batch: int
    gen_s: float
    reward_s: float
    train_s: float
    late_ess: float  # means over the round's late steps (the last quarter, at least one)
    late_clip_frac: float
    late_approx_kl: float
    peak_mem_gb: float | None = None
    # Every step's value in order (step u is u updates from mu): how the round drifted.
    step_ess: Sequence[float] = ()
    step_clip_frac: Sequence[float] = ()
    step_approx_kl: Sequence[float] = ()
    decode_steps: int = 0  # the round's longest completion in tokens; 0 when not recorded (old checkpoint)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    mini_batch_size: int
    group_size: int
    start: int  # U of the first round (prompts_per_round's)
    min_ratio: int = 1
    max_ratio: int = 16
    samples_left: int | None = None  # before max_samples
    mem_total_gb: float | None = None  # the device's memory; None on a CPU
    ess_min: float = 0.7
    clip_max: float = 0.05
    kl_max: float = 0.05
    min_gain: float = 0.03  # share of the round's time per sample a grow must save
    mem_full: float = 0.9  # shrink above this share of device memory
    mem_grow: float = 0.5  # grow only below it (doubling B at most doubles generation memory)


@dataclass(frozen=True)
class Decision:
    batch_ratio: int
    reason: str

    def inference_batch(self, limits: Limits) -> int:
        return self.batch_ratio * limits.mini_batch_size


def limits(cfg: TrainConfig, samples_done: int, mem_total_gb: float | None) -> Limits:
    """The controller's limits for a run's next round."""
    left = None if cfg.max_samples is None else max(cfg.max_samples - samples_done, 1)
    return Limits(
        cfg.mini_batch_size,
        cfg.group_size,
        cfg.batch_ratio,
        cfg.batch_ratio_min,
        cfg.batch_ratio_max,
        samples_left=left,
        mem_total_gb=mem_total_gb,
        min_gain=cfg.batch_ratio_min_gain,
    )


def ratio_unit(mini_batch_size: int, group_size: int) -> int:
    """The smallest U whose B = U * m is whole prompt groups; every U the controller picks is a multiple."""
    return group_size // gcd(mini_batch_size, group_size)


def step_series(steps: list[dict[str, float]]) -> dict[str, tuple[float, ...]]:
    """A round's per-step ESS, clip fraction and approx KL, as RoundRecord's ``step_*`` fields."""
    return {f"step_{key}": tuple(s[key] for s in steps) for key in ("ess", "clip_frac", "approx_kl")}


def late_health(steps: list[dict[str, float]]) -> tuple[float, float, float]:
    """Mean ESS, clip fraction and approx KL of a round's last quarter of steps (at least the last)."""
    late = steps[-max(1, len(steps) // 4) :]
    n = len(late)
    if not n:  # no step trained (drop_zero_std left nothing): nothing went off-policy
        return 1.0, 0.0, 0.0
    return tuple(sum(s[key] for s in late) / n for key in ("ess", "clip_frac", "approx_kl"))  # type: ignore[return-value]


def _unhealthy(r: RoundRecord, lim: Limits, f: float = 1.0) -> str | None:
    """Why the late steps of ``r`` are off-policy beyond ``f`` times the limits (grow asks for half,
    a spike is under twice)."""
    ess_floor = 1 - (1 - lim.ess_min) * f
    if r.late_ess < ess_floor:
        return f"late-step ESS {r.late_ess:.3f} < {ess_floor:.3f}"
    if r.late_clip_frac > lim.clip_max * f:
        return f"late-step clip fraction {r.late_clip_frac:.3f} > {lim.clip_max * f:.3f}"
    if r.late_approx_kl > lim.kl_max * f:
        return f"late-step approx KL {r.late_approx_kl:.4f} > {lim.kl_max * f:.4f}"
    return None


def _health_text(r: RoundRecord) -> str:
    return f"ESS {r.late_ess:.3f}, clip fraction {r.late_clip_frac:.3f}, approx KL {r.late_approx_kl:.4f}"


def _drift(rounds: list[Sequence[float]]) -> tuple[float, float] | None:
    """x_u = x_0 + c * u^2 over the steps of several rounds: x_0 is the mean of their step 0 values
    (the learner is mu there, up to numerics), c >= 0 by least squares over the later steps, each
    taken from its own round's step 0. None until some round had two steps."""
    rounds = [x for x in rounds if len(x) >= 2]
    if not rounds:
        return None
    num = sum((x[u] - x[0]) * u * u for x in rounds for u in range(1, len(x)))
    den = sum(u**4 for x in rounds for u in range(1, len(x)))
    return sum(x[0] for x in rounds) / len(rounds), max(num / den, 0.0)


def projected(history: list[RoundRecord], ratio: int) -> RoundRecord | None:
    """The last round as its late steps would read in a round of ``ratio`` steps, extrapolating how
    the steps of the rounds seen drifted (module docstring; one round's steps alone are too noisy);
    None when no round recorded two steps or more."""
    # ESS falls as the others rise: fit its deficit 1 - ESS, which grows like them.
    fits = [
        _drift([[1 - e for e in r.step_ess] for r in history]),
        _drift([r.step_clip_frac for r in history]),
        _drift([r.step_approx_kl for r in history]),
    ]
    if any(f is None for f in fits):
        return None
    late = range(ratio - max(1, ratio // 4), ratio)
    deficit, clip, kl = (sum(x0 + c * u * u for u in late) / len(late) for x0, c in fits)  # type: ignore[misc]
    last = history[-1]
    return replace(
        last,
        batch_ratio=ratio,
        inference_batch=last.inference_batch * ratio // last.batch_ratio,
        late_ess=max(0.0, 1 - deficit),
        late_clip_frac=min(1.0, clip),
        late_approx_kl=kl,
    )


def _per_step(history: list[RoundRecord]) -> bool:
    """Whether generation is fitted per decode step: every round recorded its decode steps."""
    return all(r.decode_steps > 0 for r in history)


def _gen_fit(history: list[RoundRecord], per_step: bool) -> tuple[float, float] | None:
    """Least squares gen = a + b * B over the rounds, gen per decode step when ``per_step`` (else per
    round: older checkpoints); None until two batch sizes were measured."""
    xs = [float(r.inference_batch) for r in history]
    ys = [r.gen_s / r.decode_steps if per_step else r.gen_s for r in history]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def _bounds(lim: Limits) -> tuple[int, int]:
    unit = ratio_unit(lim.mini_batch_size, lim.group_size)
    low = max(unit, -(-lim.min_ratio // unit) * unit)
    high = max(low, lim.max_ratio // unit * unit)
    if lim.samples_left is not None:  # no round past max_samples by more than part of one
        need = -(-lim.samples_left // (unit * lim.mini_batch_size)) * unit
        high = max(low, min(high, need))
    return low, high


def _snap(u: int, lim: Limits) -> int:
    low, high = _bounds(lim)
    unit = ratio_unit(lim.mini_batch_size, lim.group_size)
    return min(high, max(low, -(-u // unit) * unit))


def next_batch_ratio(history: list[RoundRecord], lim: Limits) -> Decision:
    """U for the next round from the records of the last rounds (oldest first) and the limits."""
    if not history:
        u = _snap(lim.start, lim)
        return Decision(
            u, f"start at U={u}" + ("" if u == lim.start else f" (bounds moved it from {lim.start})")
        )
    last = history[-1]
    u = last.batch_ratio
    low, high = _bounds(lim)
    mem = (
        None if lim.mem_total_gb is None or last.peak_mem_gb is None else last.peak_mem_gb / lim.mem_total_gb
    )

    def move(to: int, why: str) -> Decision:
        to = _snap(to, lim)
        verb = "grow" if to > u else "shrink" if to < u else "hold"
        return Decision(to, f"{verb} U {u}->{to}: {why}" if to != u else f"hold U={u}: {why}")

    if (bad := _unhealthy(last, lim)) is not None:
        before = history[-2] if len(history) > 1 else None
        smoothed = projected(history, u)
        if (
            _unhealthy(last, lim, 2.0) is None
            and before is not None
            and before.batch_ratio == u
            and _unhealthy(before, lim) is None
            and smoothed is not None
            and _unhealthy(smoothed, lim) is None
        ):
            return move(
                u,
                f"{bad} after a healthy round at U={u}, and the steps of the last {len(history)} rounds "
                f"fit {_health_text(smoothed)}: a spike (two in a row, or one past twice the limits, shrink)",
            )
        return move(u // 2, bad + (" (at the smallest U)" if u <= low else ""))
    if mem is not None and mem > lim.mem_full:
        return move(u // 2, f"peak memory {mem:.0%} of the device > {lim.mem_full:.0%}")
    if u > high:
        return move(high, f"at most U={high} (batch_ratio_max, or the samples left before max_samples)")
    per_step = _per_step(history)
    fit = _gen_fit(history, per_step)
    # The per-batch cost a larger batch amortises, at the last round's completion lengths.
    amortised = 0.0 if fit is None else max(fit[0], 0.0) * (last.decode_steps if per_step else 1)
    gen_model = (
        ""
        if fit is None
        else f"decode step = {1e3 * fit[0]:.1f} ms + B x fit"
        if per_step
        else f"gen = {fit[0]:.2f} s + B x fit"
    )
    batch = u * lim.mini_batch_size
    per_sample = (last.gen_s + last.reward_s + last.train_s) / last.inference_batch

    def gain(b: int) -> float:
        """Share of the round time per sample that doubling B from b saves: a / b - a / 2b."""
        return amortised / (2 * b) / max(per_sample, 1e-9)

    def worth(b: int) -> bool:
        return gain(b) >= lim.min_gain

    half = _snap(u // 2, lim)
    # Only undoes growth: below the first U the user's choice stands unless health says otherwise.
    if fit is not None and _snap(lim.start, lim) <= half < u and not worth(half * lim.mini_batch_size):
        return move(
            half,
            f"B={batch} saves an estimated {gain(half * lim.mini_batch_size):.1%} of the round time per "
            f"sample over B={half * lim.mini_batch_size} (< {lim.min_gain:.0%}; {gen_model}): staler steps "
            "for no time",
        )
    if u >= high:
        return move(u, f"at the largest U={high} the limits allow; late steps healthy")
    if (bad := _unhealthy(last, lim, 0.5)) is not None:
        return move(u, f"not growing: {bad} (grow needs half the shrink limits)")
    if mem is not None and mem > lim.mem_grow:
        return move(u, f"not growing: peak memory {mem:.0%} of the device > {lim.mem_grow:.0%}")
    seen_bad = [r.batch_ratio for r in history if r.batch_ratio >= 2 * u and _unhealthy(r, lim) is not None]
    if seen_bad:
        return move(u, f"not growing: U={min(seen_bad)} had unhealthy late steps before")
    ahead = projected(history, 2 * u)
    if ahead is not None and (bad := _unhealthy(ahead, lim)) is not None:
        fitted = f"fitted to the steps of {len(history)} round" + ("s" if len(history) > 1 else "")
        return move(u, f"not growing: at U={2 * u} the late steps would drift to {bad} ({fitted})")
    if fit is None:
        return move(2 * u, "late steps healthy; probing the larger batch (one batch size measured so far)")
    what = f"doubling B saves an estimated {gain(batch):.1%} of the round time per sample ({gen_model})"
    if worth(batch):
        return move(2 * u, f"late steps healthy; {what}")
    return move(u, f"{what} < {lim.min_gain:.0%}")
