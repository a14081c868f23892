"""Log-probs of completion tokens under the current policy, for the training step.

Only completion positions reach the output layer, in chunks (head_logps.py): no (batch x length x
vocabulary) float32 tensor is held between forward and backward.
Two layouts (``train_prompt_pass``), the same log-probs:

- ``shared``: each distinct prompt of a mini-batch goes through the model once (the tokens all of
  them start with, once for the mini-batch: kvcache.run_prompts); its KV cache is
  copied to the rows that share it and the completions run on top (the gradient of the copies adds
  up in the prompt pass). With G samples per prompt this removes most of the prompt tokens from the
  step: for arithmetic prompts are ~47 tokens and completions ~10 (docs/perf-notes.md). The choice
  where FLOPs bound the step (a CPU).
- ``per_row``: prompt and completion run as one sequence per row. More FLOPs, but one pass through
  the model instead of two and no cache copies, so about half the operators, forward and backward:
  the choice where launching kernels bounds the step (a GPU at these model sizes).
"""

from __future__ import annotations

import torch

from rapid_core.head_logps import chunk_logps
from rapid_core.kvcache import cache_kwarg, distinct_prompts, left_padded, run_prompts
from rapid_core.models import Policy, autocast

CHUNK_TOKENS = 1024


def resolve_prompt_pass(mode: str, device: torch.device) -> str:
    """The layout ``mode`` asks for on ``device``; auto: per_row on CUDA, shared elsewhere."""
    if mode == "auto":
        return "per_row" if device.type == "cuda" else "shared"
    return mode


def _shared_prompt_hidden(decoder, prompts, comp_ids, mask, pad, device) -> torch.Tensor:
    """Hidden states that predict each completion token ([tokens, d], in ``mask`` order): each
    distinct prompt once, its cache copied to its rows, the completions on top."""
    uniq, copy_of = distinct_prompts(prompts, device)
    run = run_prompts(decoder, uniq, pad, device)
    cache, last = run.cache, run.last
    kw = {cache_kwarg(decoder): cache, "use_cache": True}
    if len(uniq) < len(prompts):
        cache.batch_select_indices(copy_of)
    width = comp_ids.shape[1]
    attention = torch.cat([run.attention[copy_of], mask.long()], dim=1)
    positions = run.positions[copy_of, -1:] + 1 + torch.arange(width, device=device)
    hidden = decoder(
        input_ids=comp_ids, attention_mask=attention, position_ids=positions, **kw
    ).last_hidden_state
    # Completion token j is predicted from the prompt's last position (j = 0) or completion j - 1.
    return torch.cat([last[copy_of][:, None], hidden[:, :-1]], dim=1)[mask]


def _per_row_hidden(decoder, prompts, comp_ids, mask, pad, device) -> torch.Tensor:
    """The same hidden states from one pass over each row's prompt and completion."""
    prompt_ids, prompt_att, prompt_pos = left_padded(prompts, pad, device)
    start, width = prompt_ids.shape[1] - 1, comp_ids.shape[1]
    positions = torch.cat([prompt_pos, prompt_pos[:, -1:] + 1 + torch.arange(width, device=device)], dim=1)
    hidden = decoder(
        input_ids=torch.cat([prompt_ids, comp_ids], dim=1),
        attention_mask=torch.cat([prompt_att, mask.long()], dim=1),
        position_ids=positions,
        use_cache=False,
    ).last_hidden_state
    # Completion token j is predicted from column start + j (the prompt's last token for j = 0).
    return hidden[:, start : start + width][mask]


def completion_logps(
    policy: Policy,
    prompts: list[list[int]],
    completions: list[list[int]],
    temperature: float,
    *,
    use_reference: bool = False,
    prompt_pass: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logp [n, Tc], entropy [n, Tc], mask [n, Tc]) for each sample's completion tokens.

    Layout as in generation: left-padded prompts, then right-padded completions (``prompt_pass``:
    on the prompts' shared KV cache, or in one sequence per row; module docstring).
    ``use_reference`` runs the KL reference (adapter disabled) without gradient.
    """
    device, pad = policy.device, policy.tokenizer.pad_token_id
    n = len(prompts)
    comp_width = max(max(len(c) for c in completions), 1)
    comp_ids = torch.full((n, comp_width), pad, dtype=torch.long)
    mask = torch.zeros((n, comp_width), dtype=torch.bool)
    for i, c in enumerate(completions):
        comp_ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, : len(c)] = True
    comp_ids, mask = comp_ids.to(device), mask.to(device)
    targets = comp_ids[mask]
    hidden_of = (
        _per_row_hidden if resolve_prompt_pass(prompt_pass, device) == "per_row" else _shared_prompt_hidden
    )

    decoder, lm_head = policy.lm_parts()
    ctx = policy.reference_context() if use_reference else torch.enable_grad()
    grad = torch.no_grad() if use_reference else torch.enable_grad()
    with ctx, grad, autocast(device, policy.dtype):
        selected = hidden_of(decoder, prompts, comp_ids, mask, pad, device)
        weight = lm_head.weight
        logps, ents = [], []
        for s in range(0, selected.shape[0], CHUNK_TOKENS):
            lp, ent = chunk_logps(
                selected[s : s + CHUNK_TOKENS], weight, targets[s : s + CHUNK_TOKENS], temperature
            )
            logps.append(lp)
            ents.append(ent)
    flat_logp, flat_ent = torch.cat(logps), torch.cat(ents)

    logp = torch.zeros((n, comp_width), dtype=torch.float32, device=device)
    entropy = torch.zeros((n, comp_width), dtype=torch.float32, device=device)
    logp = logp.masked_scatter(mask, flat_logp)
    entropy = entropy.masked_scatter(mask, flat_ent)
    return logp, entropy, mask
