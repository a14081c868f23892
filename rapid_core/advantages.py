"""Group advantages (RAPID.md step 4) and the optional overlong penalty: pure functions over flat
per-sample vectors."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "none", baseline: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages [B], zero_std [B / G]) for rewards laid out group by group.

    ``baseline="mean"``: A_i = r_i - mean_g(r); ``"loo"``: the mean of the other G - 1 rewards.
    ``scale="std"`` divides by the group's std + 1e-6. ``zero_std`` flags groups whose rewards are
    all equal: they carry no learning signal.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be a flat vector of whole groups of {group_size}")
    r = rewards.double().view(-1, group_size)
    if baseline == "mean":
        base = r.mean(dim=1, keepdim=True)
    elif baseline == "loo":
        base = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; known: mean, loo")
    adv = r - base
    std = r.std(dim=1, keepdim=True, unbiased=False)
    if scale == "std":
        adv = adv / (std + 1e-6)
    elif scale != "none":
        raise ValueError(f"unknown scale {scale!r}; known: none, std")
    zero_std = (r.max(dim=1).values - r.min(dim=1).values) == 0
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32), zero_std


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment, one value <= 0 per sample: 0 up to ``max_new_tokens - buffer``
    tokens, then falling linearly to -1 at ``max_new_tokens``. Added to the rewards, it ranks a cut
    completion below a finished one with the same score, so all-wrong groups still teach the policy to
    finish (``buffer`` 0: no penalty)."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    excess = (lengths.float() - (max_new_tokens - buffer)) / buffer
    return -excess.clamp(min=0.0, max=1.0)
