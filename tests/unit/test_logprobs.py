"""The training forward's two layouts (``train_prompt_pass``) compute the same log-probs, entropies
and gradients: shared (the prompts' common prefix once, each distinct prompt's own tokens once, its
KV cache copied to its rows) and per_row (one sequence per row, fewer kernel launches)."""

import pytest
import torch

from rapid_core.config import make_config
from rapid_core.errors import ConfigError
from rapid_core.kvcache import shared_prefix
from rapid_core.logprobs import completion_logps, resolve_prompt_pass
from rapid_core.models import load_policy, prompt_token_ids


def layout_outputs(policy, prompts, completions, prompt_pass, **kw):
    policy.model.zero_grad(set_to_none=True)
    logp, entropy, mask = completion_logps(policy, prompts, completions, 0.7, prompt_pass=prompt_pass, **kw)
    if logp.requires_grad:
        # Weights differ by row and token so that a wrong position or row would show in the gradient.
        weights = torch.arange(1, logp.numel() + 1, dtype=torch.float32).reshape(logp.shape) / logp.numel()
        (logp * weights * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy, mask, grads


def test_per_row_pass_equals_the_shared_prompt_pass(tiny_model):
    policy = load_policy(make_config(model=tiny_model, dtype="fp32"))
    texts = ("Hi", "What is 12 plus 30, step by step?", "x", "Name a colour.", "2+2?", "Why?", "Go on.")
    short, long, *others = (
        prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in texts
    )
    # Groups of a shared prompt, prompts of several lengths (left padding), completions of 1-7 tokens.
    assert shared_prefix([short, long, *others]) >= 20  # shared runs the system turn once
    prompts = [short, short, short, long, long, *others]
    completions = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15], [16, 17], [18, 19, 20, 21]]
    completions += [[22 + i] * (1 + i % 3) for i in range(len(others))]
    shared = layout_outputs(policy, prompts, completions, "shared")
    per_row = layout_outputs(policy, prompts, completions, "per_row")
    assert torch.equal(shared[2], per_row[2])
    assert torch.allclose(shared[0], per_row[0], atol=1e-5)
    assert torch.allclose(shared[1], per_row[1], atol=1e-4)
    assert shared[3] and shared[3].keys() == per_row[3].keys()
    for name, g in shared[3].items():
        assert torch.allclose(g, per_row[3][name], atol=1e-5, rtol=1e-4), name
    # A completion token's log-prob does not depend on the other rows of the batch.
    alone = layout_outputs(policy, prompts[2:3], completions[2:3], "per_row")
    assert torch.allclose(alone[0][0], per_row[0][2], atol=1e-5)
    # The KL reference runs the same way, without gradient.
    ref_shared = layout_outputs(policy, prompts, completions, "shared", use_reference=True)
    ref_per_row = layout_outputs(policy, prompts, completions, "per_row", use_reference=True)
    assert torch.allclose(ref_shared[0], ref_per_row[0], atol=1e-5) and not ref_per_row[3]


def test_auto_is_per_row_on_cuda_and_shared_on_a_cpu():
    assert resolve_prompt_pass("auto", torch.device("cuda")) == "per_row"
    assert resolve_prompt_pass("auto", torch.device("cpu")) == "shared"
    assert resolve_prompt_pass("per_row", torch.device("cpu")) == "per_row"
    assert make_config(train_prompt_pass="per_row").train_prompt_pass == "per_row"
    with pytest.raises((ConfigError, ValueError), match="train_prompt_pass"):
        make_config(train_prompt_pass="both")
