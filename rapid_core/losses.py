"""Policy losses as pure tensor functions, registered by name (RAPID.md, "The off-policy,
importance-weighted group policy gradient").

All take padded [n, T] tensors: ``logp`` (log pi_theta of the sampled tokens, with gradient),
``behaviour_logp`` (log mu from the sampling pass), ``mask`` (1 on completion tokens), and
``advantages`` [n], and the run's ``TrainConfig`` for their options (is_level, is_clip, norm,
max_new_tokens, ppo_epsilon, kl_beta). They return (loss, metrics) with metrics as plain floats;
``register_loss`` records how each metric combines over the chunks of a mini-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from rapid_core.config import TrainConfig
from rapid_core.registry import Registry

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
Combine = Literal["mean", "min", "max"]  # token-weighted mean over chunks, or the extreme


@dataclass(frozen=True)
class Loss:
    """A registered loss: the pure function and how each of its metrics combines over the chunks of
    one mini-batch (``train_micro_batch``): a token-weighted mean, or the min / max."""

    fn: LossFn
    combine: dict[str, Combine]


LOSSES: Registry[Loss] = Registry("algorithm")
# Every loss reports these (RAPID.md step metrics). ESS is combined as a token-weighted mean of the
# chunks' ESS, which equals the whole mini-batch's ESS only when the train_micro_batch is 0 (one chunk).
WEIGHT_METRICS: dict[str, Combine] = {
    "w_mean": "mean",
    "w_min": "min",
    "w_max": "max",
    "clip_frac": "mean",
    "ess": "mean",
    "approx_kl": "mean",
    "kl_ref": "mean",
}


def register_loss(name: str, combine: dict[str, Combine]) -> Callable[[LossFn], LossFn]:
    def add(fn: LossFn) -> LossFn:
        LOSSES.register(name)(Loss(fn, combine))
        return fn

    return add


def combine_metrics(parts: list[tuple[dict[str, float], int]], rules: dict[str, Combine]) -> dict[str, float]:
    """One step's loss metrics from its micro-batch chunks ``(metrics, tokens)``, each metric combined
    as its loss declares: a token-weighted mean, or the min / max over chunks. A metric without a
    rule is an error, so a new metric cannot be averaged by accident."""
    total = max(sum(n for _, n in parts), 1)
    out: dict[str, float] = {}
    for key in parts[0][0]:
        rule = rules.get(key)
        values = [m[key] for m, _ in parts]
        if rule == "min":
            out[key] = min(values)
        elif rule == "max":
            out[key] = max(values)
        elif rule == "mean":
            out[key] = sum(m[key] * n for m, n in parts) / total
        else:
            raise KeyError(f"loss metric {key!r} declares no combine rule (known rules: {sorted(rules)})")
    return out


def normalise(per_token: torch.Tensor, mask: torch.Tensor, s: TrainConfig) -> torch.Tensor:
    """Sum of masked per-token terms divided as ``s.norm`` says."""
    per_token = per_token * mask
    if s.norm == "token_mean":
        return per_token.sum() / mask.sum().clamp(min=1)
    if s.norm == "seq_mean":
        return (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if s.norm == "constant":
        return per_token.sum() / (mask.shape[0] * s.max_new_tokens)
    raise ValueError(f"unknown norm {s.norm!r}; known: token_mean, seq_mean, constant")


def importance_weights(log_ratio: torch.Tensor, mask: torch.Tensor, s: TrainConfig):
    """(w, rho): detached truncated weights and raw ratios, per token or one per sequence."""
    log_ratio = log_ratio.detach() * mask
    if s.is_level == "sequence":
        # exp of the MEAN token log-ratio: the plain product explodes with length.
        mean = log_ratio.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        rho = mean.exp()[:, None].expand_as(log_ratio)
    elif s.is_level == "token":
        rho = log_ratio.exp()
    else:
        raise ValueError(f"unknown is_level {s.is_level!r}; known: token, sequence")
    w = rho.clamp(max=s.is_clip) if s.is_clip is not None else rho
    return w, rho


def off_policy_metrics(w, rho, log_ratio, mask, clip: float | None) -> dict[str, float]:
    m = mask.bool()
    wv, rv, lr = w[m], rho[m], log_ratio.detach()[m]
    n = max(int(m.sum()), 1)
    tok_rho = lr.exp()
    return {
        "w_mean": float(wv.mean()) if wv.numel() else 1.0,
        "w_min": float(wv.min()) if wv.numel() else 1.0,
        "w_max": float(wv.max()) if wv.numel() else 1.0,
        "clip_frac": float((rv > clip).float().mean()) if clip is not None and rv.numel() else 0.0,
        "ess": float(wv.sum() ** 2 / (n * (wv**2).sum())) if wv.numel() else 1.0,
        # approx KL(mu || pi) = E_mu[(rho - 1) - log rho], per token
        "approx_kl": float(((tok_rho - 1) - lr).mean()) if lr.numel() else 0.0,
    }


def kl_term(logp, ref_logp, mask, s: TrainConfig) -> tuple[torch.Tensor, float]:
    """beta * KL(pi || ref), the k3 estimator exp(ref - logp) - (ref - logp) - 1 per token."""
    if ref_logp is None or s.kl_beta == 0:
        return logp.new_zeros(()), 0.0
    d = ref_logp - logp
    k3 = d.exp() - d - 1
    kl = normalise(k3, mask, s)
    return s.kl_beta * kl, float(kl.detach())


@register_loss("rapid", combine=WEIGHT_METRICS)
def rapid_loss(logp, behaviour_logp, advantages, mask, s: TrainConfig, ref_logp=None):
    """- sum w_it A_i log pi(y_it) / norm, with w = min(rho, c) detached."""
    mask = mask.to(logp.dtype)
    log_ratio = logp - behaviour_logp
    w, rho = importance_weights(log_ratio, mask, s)
    loss = normalise(-w * advantages[:, None] * logp, mask, s)
    kl, kl_value = kl_term(logp, ref_logp, mask, s)
    metrics = off_policy_metrics(w, rho, log_ratio, mask, s.is_clip)
    metrics["kl_ref"] = kl_value
    return loss + kl, metrics


def ppo_clipped_objective(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Per-token - min(rho A, clip(rho, 1 - eps, 1 + eps) A) of PPO."""
    a = advantages[:, None]
    return -torch.minimum(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon) * a)


@register_loss("grpo", combine=WEIGHT_METRICS)
def grpo_loss(logp, behaviour_logp, advantages, mask, s: TrainConfig, ref_logp=None):
    """GRPO with one optimizer step per round: the PPO ratio is taken against the policy's own
    detached log-probs, so it is exactly 1 (as TRL computes it with one iteration). The sampler's
    log-probs differ from the training pass by bf16 and decode-vs-forward numerics and would clip
    tokens to zero gradient for no reason (RAPID.md, baselines); the weight metrics still compare
    with the sampler, so that mismatch stays visible."""
    mask = mask.to(logp.dtype)
    ratio = (logp - logp.detach()).exp()
    loss = normalise(ppo_clipped_objective(ratio, advantages, s.ppo_epsilon), mask, s)
    kl, kl_value = kl_term(logp, ref_logp, mask, s)
    log_ratio = logp - behaviour_logp
    metrics = off_policy_metrics(ratio.detach(), log_ratio.detach().exp(), log_ratio, mask, None)
    clipped = ((ratio.detach() - 1).abs() > s.ppo_epsilon).to(mask.dtype)
    metrics["clip_frac"] = float((clipped * mask).sum() / mask.sum().clamp(min=1))
    metrics["kl_ref"] = kl_value
    return loss + kl, metrics


@register_loss("pg", combine=WEIGHT_METRICS)
def pg_loss(logp, behaviour_logp, advantages, mask, s: TrainConfig, ref_logp=None):
    """Plain on-policy policy gradient with the group-mean baseline: - A log pi."""
    mask = mask.to(logp.dtype)
    log_ratio = logp - behaviour_logp
    loss = normalise(-advantages[:, None] * logp, mask, s)
    kl, kl_value = kl_term(logp, ref_logp, mask, s)
    ones = torch.ones_like(logp)
    metrics = off_policy_metrics(ones, log_ratio.detach().exp(), log_ratio, mask, None)
    metrics["kl_ref"] = kl_value
    return loss + kl, metrics
