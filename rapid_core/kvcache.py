"""The prompt pass shared by the decode loop and the training forward pass: left-padded prompt
batches whose KV cache is computed once per distinct prompt (and the tokens all of them start with
once per batch), then copied to that prompt's rows."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
from transformers import DynamicCache

# A shared prefix runs in a pass of its own, which has a fixed cost. On a CPU, with 26 shared
# tokens, the prompt pass and training step of two prompts ran 3-23% slower, of four 0-19% faster,
# of eight 10-38% faster (bench/prompt_prefix.py, docs/perf-notes.md section 19). Below this many
# token positions saved, prompts run whole.
MIN_SAVED_TOKENS = 128


def cache_kwarg(decoder) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; 5.17 (the GPU machine) has the old name."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def distinct_prompts(prompts: list[list[int]], device) -> tuple[list[list[int]], torch.Tensor]:
    """(distinct prompts in first-seen order, index of each row's prompt among them)."""
    seen: dict[tuple[int, ...], int] = {}
    copy_of = [seen.setdefault(tuple(p), len(seen)) for p in prompts]
    return [list(p) for p in seen], torch.tensor(copy_of, device=device)


def shared_prefix(prompts: list[list[int]], min_saved: int | None = None) -> int:
    """Length of the tokens every prompt starts with (a chat template's system turn, a shared
    instruction), leaving each prompt at least one token of its own; 0 where running them once
    saves fewer than ``min_saved`` (default MIN_SAVED_TOKENS) token positions."""
    if len(prompts) < 2:
        return 0
    n = min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)
    return n if n * (len(prompts) - 1) >= (MIN_SAVED_TOKENS if min_saved is None else min_saved) else 0


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


def full_attention_only(config) -> bool:
    """No sliding-window layers. Their masks count cache columns, and a shared prefix puts padding
    columns between it and a prompt's own tokens."""
    layer_types = getattr(config, "layer_types", None) or []
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    return not sliding and all(t == "full_attention" for t in layer_types)


@dataclass
class PromptPass:
    """One pass over distinct prompts: their KV cache, each prompt's last hidden state, and the
    cache's columns per prompt (attention: 1 where a token is; positions: the last column is the
    prompt's last token)."""

    cache: DynamicCache
    last: torch.Tensor  # [prompts, d]
    attention: torch.Tensor  # [prompts, width]
    positions: torch.Tensor  # [prompts, width]


def run_prompts(decoder, prompts: list[list[int]], pad_id: int, device) -> PromptPass:
    """Run distinct ``prompts`` through ``decoder`` (gradients flow where enabled).

    The tokens every prompt starts with (a chat template's system turn: 26 of an arithmetic
    prompt's ~47 tokens) run once, at batch 1, and their cache is repeated for each prompt; the
    rest runs left-padded after it, so the cache columns are [shared prefix, padding, own tokens]
    with the padding masked out. On a CPU this halves the prompt pass of 64 arithmetic prompts
    (docs/perf-notes.md §19)."""
    shared = shared_prefix(prompts) if full_attention_only(decoder.config) else 0
    cache = DynamicCache()
    kw = {cache_kwarg(decoder): cache, "use_cache": True}
    if shared:
        decoder(input_ids=torch.tensor([prompts[0][:shared]], device=device), **kw)
        cache.batch_repeat_interleave(len(prompts))
    ids, attention, positions = left_padded([p[shared:] for p in prompts], pad_id, device)
    positions = positions + shared
    attention = torch.cat([attention.new_ones((len(prompts), shared)), attention], dim=1)
    hidden = decoder(input_ids=ids, attention_mask=attention, position_ids=positions, **kw).last_hidden_state
    # contiguous: a strided [:, -1] slice makes the output layer's matmul expand its weight per row.
    return PromptPass(cache, hidden[:, -1].contiguous(), attention, positions)
