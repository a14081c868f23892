"""Log-probs of completion tokens under the current policy, for the training step.

Only completion positions reach the output layer, in chunks, each recomputed in backward
(activation checkpointing): no (batch x length x vocabulary) float32 tensor is ever held.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from rapid_core.models import Policy, autocast

CHUNK_TOKENS = 1024


def _chunk_logp(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float):
    logits = (hidden @ weight.t()).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def completion_logps(
    policy: Policy,
    prompts: list[list[int]],
    completions: list[list[int]],
    temperature: float,
    *,
    use_reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logp [n, Tc], entropy [n, Tc], mask [n, Tc]) for each sample's completion tokens.

    Sequences are prompt + completion, right padded, so positions start at 0 for every row.
    ``use_reference`` runs the KL reference (adapter disabled) without gradient.
    """
    device = policy.device
    n = len(prompts)
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width, comp_width = max(lengths), max(max(len(c) for c in completions), 1)
    ids = torch.full((n, width), policy.tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    target_mask = torch.zeros((n, width), dtype=torch.bool)  # positions whose NEXT token is a target
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attention[i, : len(p) + len(c)] = 1
        target_mask[i, len(p) - 1 : len(p) + len(c) - 1] = True
    ids, attention, target_mask = ids.to(device), attention.to(device), target_mask.to(device)
    targets = ids[:, 1:][target_mask[:, :-1]]

    decoder, lm_head = policy.lm_parts()
    ctx = policy.reference_context() if use_reference else torch.enable_grad()
    grad = torch.no_grad() if use_reference else torch.enable_grad()
    with ctx, grad, autocast(device, policy.dtype):
        hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state
        selected = hidden[target_mask]
        weight = lm_head.weight
        logps, ents = [], []
        for s in range(0, selected.shape[0], CHUNK_TOKENS):
            h, t = selected[s : s + CHUNK_TOKENS], targets[s : s + CHUNK_TOKENS]
            if torch.is_grad_enabled():
                lp, ent = checkpoint(_chunk_logp, h, weight, t, temperature, use_reentrant=False)
            else:
                lp, ent = _chunk_logp(h, weight, t, temperature)
            logps.append(lp)
            ents.append(ent)
    flat_logp, flat_ent = torch.cat(logps), torch.cat(ents)

    mask = torch.zeros((n, comp_width), dtype=torch.bool, device=device)
    for i, c in enumerate(completions):
        mask[i, : len(c)] = True
    logp = torch.zeros((n, comp_width), dtype=torch.float32, device=device)
    entropy = torch.zeros((n, comp_width), dtype=torch.float32, device=device)
    logp = logp.masked_scatter(mask, flat_logp)
    entropy = entropy.masked_scatter(mask, flat_ent)
    return logp, entropy, mask
