"""The output layer of the training pass: log-prob and entropy of each chosen token under
softmax(h W^T / T), for a chunk of hidden states.

With the output layer frozen (LoRA, where it is not a target) only h needs a gradient, and
d log p_t / d h = (W_t - p W) / T is known in the forward pass: ``FrozenHeadLogp`` computes it
there and keeps that [tokens, d] tensor, not the [tokens, vocabulary] logits. One pass over the
logits instead of a checkpointed pass, its recompute in backward and a log-softmax backward: on a
CPU the chunk of a 32-sample step took half the time (docs/perf-notes.md §21). A trainable head
(full fine-tuning) needs p in backward for W's gradient: there the log-softmax is checkpointed and
recomputed in backward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _pass(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float, direction: bool):
    """(log p of targets, entropy, (W_t - p W) / T or None), all float32; no autograd graph."""
    z = (h.to(weight.dtype) @ weight.t()).float()
    if temperature != 1.0:
        z.mul_(1.0 / temperature)
    z.sub_(z.amax(-1, keepdim=True))  # z = logits / T - max, in place: one [tokens, V] buffer
    p = torch.exp(z)
    total = p.sum(-1, keepdim=True)
    p.div_(total)
    log_total = total.log().squeeze(1)
    logp = z.gather(1, targets[:, None]).squeeze(1) - log_total
    entropy = log_total - torch.einsum("tv,tv->t", p, z)  # -sum p log p, log p = z - log total
    if not direction:
        return logp, entropy, None
    chosen = weight[targets].float()
    return logp, entropy, (chosen - (p.to(weight.dtype) @ weight).float()) / temperature


class FrozenHeadLogp(torch.autograd.Function):
    """(log p of ``targets``, entropy) per row of ``h``; backward gives h's gradient only."""

    @staticmethod
    def forward(ctx, h, weight, targets, temperature):
        with torch.autocast(h.device.type, enabled=False):  # dtypes are explicit in _pass
            logp, entropy, direction = _pass(h, weight, targets, temperature, direction=True)
        ctx.save_for_backward(direction)
        ctx.h_dtype = h.dtype
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        (direction,) = ctx.saved_tensors
        return (grad_logp[:, None] * direction).to(ctx.h_dtype), None, None, None


def _plain(hidden, weight, targets, temperature):
    logits = (hidden @ weight.t()).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def chunk_logps(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of ``targets``, entropy) for a chunk of hidden states ``h`` [tokens, d]."""
    if not torch.is_grad_enabled() or not (h.requires_grad or weight.requires_grad):
        with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
            logp, entropy, _ = _pass(h, weight, targets, temperature, direction=False)
        return logp, entropy
    if not weight.requires_grad:
        return FrozenHeadLogp.apply(h, weight, targets, temperature)
    # Recomputed in backward: no [tokens, vocabulary] float32 tensor is held between the passes.
    return checkpoint(_plain, h, weight, targets, temperature, use_reentrant=False)
