"""Attention for the training pass on a CPU: torch's fused kernel in float32, with grouped-query
attention done by the kernel.

Two things transformers' own sdpa path does are slow on a CPU at a training step's shapes
(SmolLM2-135M, 32 completions of 10 tokens on their prompts' cache, forward and backward, 1 thread;
docs/perf-notes.md §21):
- in bf16 the CPU kernel took 25.2 ms, against 4.4 ms with q, k and v cast to float32;
- with a mask, transformers repeats k and v for every query head before the kernel (7.3 ms in float32,
  and a sum of the repeated heads' gradients in backward) where the kernel's own GQA took 3.8 ms.
The projections around it stay in the compute dtype. Registered with transformers' attention
interface under ``NAME``, with sdpa's masks; the policy uses it, the sampling copy does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "rapid_cpu_sdpa"


def _attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs
):
    if kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    dtype = query.dtype
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask.float()
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    with torch.autocast(query.device.type, enabled=False):  # autocast would cast q, k, v back to bf16
        out = F.scaled_dot_product_attention(
            query.float(),
            key.float(),
            value.float(),
            attn_mask=attention_mask,
            dropout_p=dropout,
            scale=scaling,
            is_causal=bool(causal and attention_mask is None and query.shape[2] > 1),
            enable_gqa=query.shape[1] != key.shape[1],
        )
    return out.transpose(1, 2).contiguous().to(dtype), None  # [batch, tokens, heads, head_dim]


def use_cpu_attention(model) -> bool:
    """Switch ``model``'s attention to this module's where it runs sdpa; False where it does not
    (another implementation was asked for, or the architecture cannot change it after loading)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME


def plain_implementation(config) -> str:
    """The attention a copy of the model built from ``config`` should use: this module's attention
    is for the training pass, so a copy for sampling gets plain sdpa."""
    return "sdpa" if config._attn_implementation == NAME else config._attn_implementation
