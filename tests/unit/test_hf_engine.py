"""The hf engine: behaviour log-probs are those of the distribution sampled, greedy is deterministic,
completions stop at EOS, and the sampler draws from softmax(logits / T)."""

import pytest
import torch

from rapid_core.config import make_config
from rapid_core.engines import Sampling, make_engine
from rapid_core.engines.hf import prefill, sample_categorical
from rapid_core.engines.sampling_model import SamplingModel
from rapid_core.kvcache import shared_prefix
from rapid_core.logprobs import completion_logps
from rapid_core.models import load_policy, prompt_token_ids


def test_sampler_matches_the_categorical_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample_categorical(probs.log().expand(200_000, 4).contiguous())
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.005)


def inverse_cdf_float64(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The one-level reference: a float64 running sum over the whole vocabulary."""
    cdf = logp.double().exp().cumsum(dim=-1)
    return torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).contiguous(), right=True).squeeze(1)


@pytest.mark.parametrize("vocab", [5, 256, 1000, 49_152])
def test_two_level_sampler_draws_what_one_float64_running_sum_draws(vocab):
    torch.manual_seed(vocab)
    logp = torch.log_softmax(3 * torch.randn(512, vocab), dim=-1)  # peaked and long-tailed rows
    u = torch.rand(512, dtype=torch.float64)
    same = sample_categorical(logp, u) == inverse_cdf_float64(logp, u)
    # float32 probabilities move a boundary by ~1e-8 of the mass: a draw may differ only when its
    # uniform lands that close to one, which 512 draws do not hit.
    assert bool(same.all())


def test_two_level_sampler_never_draws_a_token_of_probability_zero():
    logp = torch.full((4_000, 700), float("-inf"))  # 3 blocks, the last one partial
    allowed = torch.tensor([3, 255, 256, 699])
    logp[:, allowed] = torch.tensor([0.1, 0.2, 0.3, 0.4]).log()
    torch.manual_seed(1)
    draws = sample_categorical(logp)
    assert set(draws.tolist()) == set(allowed.tolist())
    freq = torch.bincount(draws, minlength=700)[allowed].float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03)
    # The ends of the uniform's range: 0 takes the first token with mass, 1 - 2^-53 the last.
    edges = sample_categorical(logp[:2], torch.tensor([0.0, 1 - 2**-53], dtype=torch.float64))
    assert edges.tolist() == [3, 699]


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


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix([[1] * 9 + [2], [1] * 9 + [3]], min_saved=9) == 9
    assert shared_prefix([[1] * 30 + [i] for i in range(6)]) == 30  # saves 5 x 30 token positions
    assert shared_prefix([[1] * 30 + [i] for i in range(5)]) == 0  # 4 x 30 < 128: not worth a pass
    assert shared_prefix([[1] * 9, [1] * 12], min_saved=1) == 8  # the shorter prompt keeps its last token
    assert shared_prefix([[1] * 9 + [2], [1] * 9 + [3]], min_saved=10) == 0  # saves 9 token positions
    assert shared_prefix([[1] * 9 + [i] for i in range(3)], min_saved=18) == 9  # 3 prompts save 18
    assert shared_prefix([[1] * 20], min_saved=1) == 0  # a single prompt: nothing to share
    assert shared_prefix([[1, 2] * 5, [2, 1] * 5], min_saved=1) == 0


def test_a_prompt_pass_over_a_shared_prefix_equals_each_prompt_run_alone(tiny_model):
    policy = load_policy(make_config(model=tiny_model, dtype="fp32"))
    prompts = [
        prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}])
        for t in ("Hi", "What is 2+2?", "a longer prompt than the first two, with more tokens", "x", "Why?")
    ]
    prompts += [prompts[1][:-3], prompts[0]]  # a prompt that begins another one, and a repeat
    assert shared_prefix(prompts) >= 20  # the chat template's system turn
    model, pad = SamplingModel(policy).get(), policy.tokenizer.pad_token_id
    with torch.no_grad():
        logits, pre = prefill(model, prompts, pad)
        for i, p in enumerate(prompts):
            alone, _ = prefill(model, [p], pad)
            assert torch.allclose(logits[i], alone[0], atol=1e-4), i
    assert pre.copy_of.tolist() == [0, 1, 2, 3, 4, 5, 0]
    assert pre.attention.sum(dim=1).tolist() == [len(p) for p in prompts]
    assert pre.next_pos.view(-1).tolist() == [len(p) for p in prompts]


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
