"""The policy's attention on a CPU (cpu_attention.py): float32 with the kernel's own grouped-query
attention gives the log-probs and gradients transformers' sdpa gives, on left-padded prompts with
their cache shared; the sampling copy keeps plain sdpa."""

import torch

from rapid_core import cpu_attention
from rapid_core.config import make_config
from rapid_core.cpu_attention import NAME, use_cpu_attention
from rapid_core.engines.sampling_model import SamplingModel
from rapid_core.logprobs import completion_logps
from rapid_core.models import load_policy, prompt_token_ids


def batch(policy):
    texts = ("Hi", "What is 12 plus 30, step by step?", "Name a colour.")
    short, long, other = (prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in texts)
    prompts = [short, short, long, long, other]
    completions = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [16, 17], [18, 19, 20, 21]]
    return prompts, completions


def logps_and_grads(policy, prompt_pass):
    policy.model.zero_grad(set_to_none=True)
    prompts, completions = batch(policy)
    logp, _, mask = completion_logps(policy, prompts, completions, 0.7, prompt_pass=prompt_pass)
    weights = torch.arange(1, logp.numel() + 1, dtype=torch.float32).reshape(logp.shape) / logp.numel()
    (logp * weights * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    return logp.detach() * mask, grads


def with_sdpa(policy, fn):
    policy.model.set_attn_implementation("sdpa")
    try:
        return fn()
    finally:
        policy.model.set_attn_implementation(NAME)


def test_the_cpu_policy_attention_equals_sdpa_in_float32(tiny_model):
    policy = load_policy(make_config(model=tiny_model, dtype="fp32"))
    config = policy.model.get_base_model().config
    assert config._attn_implementation == NAME
    assert config.num_key_value_heads < config.num_attention_heads  # the GQA path is the one tested
    for prompt_pass in ("shared", "per_row"):
        got = logps_and_grads(policy, prompt_pass)
        want = with_sdpa(policy, lambda: logps_and_grads(policy, prompt_pass))  # noqa: B023
        assert torch.allclose(got[0], want[0], atol=1e-5), prompt_pass
        assert got[1] and got[1].keys() == want[1].keys()
        for name, g in got[1].items():
            assert torch.allclose(g, want[1][name], atol=1e-5, rtol=1e-4), (prompt_pass, name)


def test_in_bf16_the_kernel_gets_float32_and_the_unrepeated_heads(tiny_model, monkeypatch):
    policy = load_policy(make_config(model=tiny_model, dtype="bf16"))
    calls, kernel = [], cpu_attention.F.scaled_dot_product_attention

    def spy(query, key, value, **kw):
        calls.append((query.dtype, key.shape[1], kw["enable_gqa"]))
        return kernel(query, key, value, **kw)

    monkeypatch.setattr(cpu_attention.F, "scaled_dot_product_attention", spy)
    got = logps_and_grads(policy, "shared")
    kv_heads = policy.model.get_base_model().config.num_key_value_heads
    assert calls and set(calls) == {(torch.float32, kv_heads, True)}
    monkeypatch.undo()
    want = with_sdpa(policy, lambda: logps_and_grads(policy, "shared"))
    assert float((got[0] - want[0]).abs().max()) < 0.05


def test_the_sampling_copy_keeps_plain_sdpa_and_other_implementations_are_left_alone(tiny_model):
    policy = load_policy(make_config(model=tiny_model, dtype="bf16"))
    assert SamplingModel(policy).get().config._attn_implementation == "sdpa"
    policy.model.set_attn_implementation("eager")
    assert not use_cpu_attention(policy.model.get_base_model())
    assert policy.model.get_base_model().config._attn_implementation == "eager"
