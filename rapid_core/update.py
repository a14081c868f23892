"""One optimizer step on one mini-batch (RAPID.md, "The off-policy, importance-weighted group policy
gradient"): log pi_theta of the sampled tokens, the loss against the behaviour log-probs, backward,
clip, step; and the optimizer, and the learning rate each step takes from the schedule.

The mini-batch may run in chunks of ``train_micro_batch`` samples; their gradients add up to the
whole mini-batch's. The policy stays in eval mode: at staleness 0 the training pass must be the
policy that sampled (no dropout), so the importance weights are 1 up to numerics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rapid_core.config import TrainConfig
from rapid_core.engines import Rollouts
from rapid_core.logprobs import completion_logps
from rapid_core.losses import Loss, combine_metrics
from rapid_core.metrics import StepMetrics
from rapid_core.models import Policy
from rapid_core.state import Progress, RunState


@dataclass(frozen=True)
class Gradient:
    """What ``accumulate_gradient`` left in ``.grad`` of the trainable weights, and its metrics."""

    loss: float
    tokens: int
    entropy: float  # mean over the mini-batch's completion tokens
    metrics: dict[str, float]  # the loss's own metrics, combined over chunks as it declares


def behaviour_logps(rollouts: Rollouts, rows: list[int], like: torch.Tensor) -> torch.Tensor:
    """log mu of the rows' completion tokens, padded to the shape of ``like`` ([n, T])."""
    out = torch.zeros_like(like)
    for j, i in enumerate(rows):
        lp = rollouts.behaviour_logps[i]
        out[j, : len(lp)] = torch.tensor(lp, device=like.device)
    return out


def accumulate_gradient(
    policy: Policy,
    rollouts: Rollouts,
    advantages: torch.Tensor,
    rows: list[int],
    cfg: TrainConfig,
    loss: Loss,
) -> Gradient:
    """Backward of the mini-batch ``rows`` of ``rollouts`` (gradients add to ``.grad``)."""
    policy.model.train(False)  # no dropout: at staleness 0 the policy trained is the one that sampled
    chunk = cfg.train_micro_batch or len(rows)
    total = sum(len(rollouts.completion_ids[i]) for i in rows)
    parts: list[tuple[dict[str, float], int]] = []
    loss_total, entropy_sum = 0.0, 0.0
    for s in range(0, len(rows), chunk):
        part = rows[s : s + chunk]
        prompts = [rollouts.prompt_ids[i] for i in part]
        comps = [rollouts.completion_ids[i] for i in part]
        logp, entropy, mask = completion_logps(
            policy, prompts, comps, cfg.temperature, prompt_pass=cfg.train_prompt_pass
        )
        ref = None
        if cfg.kl_beta > 0:
            ref, _, _ = completion_logps(
                policy, prompts, comps, cfg.temperature, use_reference=True, prompt_pass=cfg.train_prompt_pass
            )
        adv = advantages[part].to(logp.device)
        value, metrics = loss.fn(logp, behaviour_logps(rollouts, part, logp), adv, mask, cfg, ref_logp=ref)
        # Each chunk's share of the whole mini-batch's normaliser.
        n_tok = int(mask.sum())
        share = n_tok / max(total, 1) if cfg.norm == "token_mean" else len(part) / len(rows)
        (value * share).backward()
        loss_total += float(value.detach()) * share
        entropy_sum += float((entropy * mask).sum())
        parts.append((metrics, n_tok))
    return Gradient(loss_total, total, entropy_sum / max(total, 1), combine_metrics(parts, loss.combine))


def make_optimizer(cfg: TrainConfig, policy: Policy) -> torch.optim.Optimizer:
    """AdamW over the trainable weights; ``optimizer_step`` sets each step's learning rate."""
    return torch.optim.AdamW(
        policy.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )


def run_fraction(
    cfg: TrainConfig, progress: Progress, round_samples: int, u: int, steps: int, elapsed_s: float
) -> float:
    """Where step ``u`` of the ``steps`` a round takes lies in the planned run, from 0 to 1: in rounds
    (``rounds``), samples (``max_samples``) or training seconds (``time_budget_s``, ``elapsed_s`` of
    it spent), whichever ends the run first. Measured in rounds, samples and seconds rather than
    optimizer steps, because steps per round vary (batch_ratio_control=auto, drop_zero_std): a decay
    over a step count fixed in advance would end too early or too late."""
    within = u / max(steps, 1)
    fractions = [0.0]
    if cfg.rounds:
        fractions.append((progress.round + within) / cfg.rounds)
    if cfg.max_samples:
        fractions.append((progress.samples + within * round_samples) / cfg.max_samples)
    if cfg.time_budget_s:
        fractions.append(elapsed_s / cfg.time_budget_s)
    return min(1.0, max(fractions))


def lr_factor(warmup: int, schedule: str, fraction: float, step: int) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based), ``fraction`` of the way
    through the run: a linear warmup over ``warmup`` steps times the decay, which ends at 0 with the
    run so the final rounds move the policy little (docs/main-job.md)."""
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if schedule == "constant":
        return ramp
    decay = 1.0 - fraction if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * fraction))
    return ramp * decay


def optimizer_step(
    s: RunState,
    rollouts: Rollouts,
    advantages: torch.Tensor,
    rows: list[int],
    staleness: int,
    loss: Loss,
    fraction: float = 0.0,
) -> StepMetrics:
    """One optimizer step on the mini-batch ``rows``, ``fraction`` of the way through the run (the
    learning rate's schedule, ``run_fraction``); moves the run's step and token counters."""
    cfg, p = s.cfg, s.progress
    lr = cfg.learning_rate * lr_factor(cfg.warmup_steps, cfg.lr_schedule, fraction, p.step)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    s.optimizer.zero_grad(set_to_none=True)
    grad = accumulate_gradient(s.policy, rollouts, advantages, rows, cfg, loss)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(s.policy.trainable_parameters(), max_norm))
    s.optimizer.step()
    p.step += 1
    p.trained_tokens += grad.tokens
    return StepMetrics(
        round=p.round,
        step=p.step,
        staleness=staleness,
        loss=grad.loss,
        grad_norm=grad_norm,
        lr=lr,
        samples=len(rows),
        tokens=grad.tokens,
        entropy=grad.entropy,
        **grad.metrics,
    )
