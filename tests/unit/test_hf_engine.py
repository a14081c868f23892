"""The hf engine: behaviour log-probs are those of the distribution sampled, greedy is deterministic,
completions stop at EOS, and the sampler draws from softmax(logits / T)."""

import torch

from rapid_core.config import make_config
from rapid_core.engines import Sampling, make_engine
from rapid_core.engines.hf import sample_categorical
from rapid_core.logprobs import completion_logps
from rapid_core.models import load_policy, prompt_token_ids


def test_sampler_matches_the_categorical_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample_categorical(probs.log().expand(200_000, 4).contiguous())
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.005)


def test_behaviour_logprobs_equal_a_fresh_forward_pass_at_the_sampling_temperature(tiny_model):
    cfg = make_config(model=tiny_model, dtype="fp32", gen_micro_batch=3)  # 2 prompts x 3 samples: 2 batches
    policy = load_policy(cfg)
    engine = make_engine(cfg, policy)
    prompts = [
        prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in ("Hi", "What is 2+2?")
    ]
    torch.manual_seed(0)
    out = engine.generate(prompts, 3, Sampling(temperature=0.7, max_new_tokens=8))
    assert len(out) == 6 and out.prompt_ids[0] == prompts[0] and out.prompt_ids[5] == prompts[1]
    with torch.no_grad():
        logp, _, mask = completion_logps(policy, out.prompt_ids, out.completion_ids, 0.7)
    for i, lps in enumerate(out.behaviour_logps):
        assert len(lps) == len(out.completion_ids[i]) == int(mask[i].sum())
        assert torch.allclose(torch.tensor(lps), logp[i, : len(lps)].cpu(), atol=1e-4)
        assert out.finish_reasons[i] in ("stop", "length")
        if out.finish_reasons[i] == "stop":
            assert out.completion_ids[i][-1] == policy.tokenizer.eos_token_id


def test_greedy_decoding_is_deterministic_and_batch_independent(tiny_model):
    cfg = make_config(model=tiny_model, dtype="fp32", gen_micro_batch=8)
    policy = load_policy(cfg)
    prompts = [
        prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}])
        for t in ("a", "a much longer prompt than the first one")
    ]
    g = Sampling(max_new_tokens=6, greedy=True)
    together = make_engine(cfg, policy).generate(prompts, 1, g)
    alone = make_engine(cfg, policy).generate(prompts[:1], 1, g)
    assert together.completion_ids[0] == alone.completion_ids[0]  # left padding does not leak
