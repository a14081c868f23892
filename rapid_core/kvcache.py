"""Small helpers shared by the decode loop and the training forward pass: left-padded prompt batches
whose KV cache is computed once per distinct prompt and copied to that prompt's rows."""

from __future__ import annotations

import inspect

import torch


def cache_kwarg(decoder) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; 5.17 (the GPU machine) has the old name."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def distinct_prompts(prompts: list[list[int]], device) -> tuple[list[list[int]], torch.Tensor]:
    """(distinct prompts in first-seen order, index of each row's prompt among them)."""
    seen: dict[tuple[int, ...], int] = {}
    copy_of = [seen.setdefault(tuple(p), len(seen)) for p in prompts]
    return [list(p) for p in seen], torch.tensor(copy_of, device=device)


def left_padded(
    prompts: list[list[int]], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention, positions) with left padding: every row's next token is at the same column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        attention[i, width - len(p) :] = 1
    ids, attention = ids.to(device), attention.to(device)
    return ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)
