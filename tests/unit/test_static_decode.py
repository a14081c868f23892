"""The static-cache decode loop samples what the dynamic loop samples: same tokens from the same
seed, the same behaviour log-probs (fp32), across micro-batches, early stops and bucket compaction."""

import pytest
import torch

from rapid_core.config import make_config
from rapid_core.engines import HFEngine, Sampling
from rapid_core.engines.static_decode import StaticDecoder, bucket
from rapid_core.errors import ConfigError
from rapid_core.kvcache import shared_prefix
from rapid_core.logprobs import completion_logps
from rapid_core.models import load_policy, prompt_token_ids

TEXTS = ("Hi", "What is 2+2?", "a much longer prompt than the others, with several more tokens", "x")


@pytest.fixture(scope="module")
def policy(tiny_model):
    return load_policy(make_config(model=tiny_model, dtype="fp32"))


def prompts_of(policy):
    return [prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in TEXTS]


def run(policy, decode, sampling, n=5, micro_batch=16, eos_every=None, seed=0):
    engine = HFEngine(policy, micro_batch=micro_batch, decode=decode)
    if eos_every:  # many "end" tokens, so rows stop at scattered steps and buckets shrink
        engine.eos_ids = torch.arange(0, len(policy.tokenizer), eos_every)
    torch.manual_seed(seed)
    return engine.generate(prompts_of(policy), n, sampling)


@pytest.mark.parametrize("eos_every", [None, 7])
def test_static_loop_samples_the_same_tokens_and_logprobs_as_the_dynamic_loop(policy, eos_every, monkeypatch):
    compactions = []
    original = StaticDecoder._compact
    monkeypatch.setattr(
        StaticDecoder, "_compact", lambda self, n, m: compactions.append((n, m)) or original(self, n, m)
    )
    sampling = Sampling(temperature=0.8, max_new_tokens=16)
    dyn = run(policy, "dynamic", sampling, n=8, eos_every=eos_every, micro_batch=32)
    sta = run(policy, "static", sampling, n=8, eos_every=eos_every, micro_batch=32)
    assert bool(compactions) == bool(eos_every)  # 32 rows, shrunk to smaller buckets as rows finish
    assert sta.stats["decode"] == "static" and dyn.stats["decode"] == "dynamic"
    assert sta.completion_ids == dyn.completion_ids
    assert sta.finish_reasons == dyn.finish_reasons
    lengths = {len(c) for c in dyn.completion_ids}
    if eos_every:
        assert len(lengths) > 3 and "stop" in dyn.finish_reasons  # rows ended at many different steps
    for a, b in zip(sta.behaviour_logps, dyn.behaviour_logps, strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_both_loops_continue_a_shared_prefix_pass_with_the_policy_logprobs(policy):
    # Eight distinct prompts in one micro-batch: their chat-template system turn runs once, and
    # the cache columns are [prefix, padding, own tokens]; both loops must decode over them.
    texts = (*TEXTS, "Why?", "Name a colour.", "2+2?", "Go on, please.")
    prompts = [prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in texts]
    assert shared_prefix(prompts) >= 20
    sampling = Sampling(temperature=0.8, max_new_tokens=8)
    outs = []
    for decode in ("dynamic", "static"):
        torch.manual_seed(1)
        outs.append(HFEngine(policy, micro_batch=16, decode=decode).generate(prompts, 2, sampling))
    dyn, sta = outs
    assert sta.completion_ids == dyn.completion_ids
    with torch.no_grad():
        logp, _, _ = completion_logps(policy, sta.prompt_ids, sta.completion_ids, 0.8, prompt_pass="per_row")
    for i, lps in enumerate(sta.behaviour_logps):
        assert torch.allclose(torch.tensor(lps), logp[i, : len(lps)], atol=1e-4), i


def test_static_loop_is_exact_across_micro_batches_and_greedy(policy):
    greedy = Sampling(max_new_tokens=10, greedy=True)
    assert (
        run(policy, "static", greedy, n=3, micro_batch=5).completion_ids
        == run(policy, "dynamic", greedy, n=3, micro_batch=5).completion_ids
    )
    sampling = Sampling(temperature=1.0, max_new_tokens=9)
    a = run(policy, "static", sampling, n=6, micro_batch=7, eos_every=29, seed=3)
    b = run(policy, "dynamic", sampling, n=6, micro_batch=7, eos_every=29, seed=3)
    assert a.completion_ids == b.completion_ids


def test_a_full_length_step_samples_what_the_eager_step_on_used_columns_samples(policy, monkeypatch):
    # Eager steps multiply attention by the used cache columns only; a captured CUDA graph cannot
    # and runs over the whole buffer. Both must give the same tokens and log-probs.
    sampling = Sampling(temperature=0.9, max_new_tokens=12)
    eager = run(policy, "static", sampling, n=4, eos_every=11)
    full_step = StaticDecoder._step
    monkeypatch.setattr(StaticDecoder, "_step", lambda self, n, s, upto=None: full_step(self, n, s, None))
    full = run(policy, "static", sampling, n=4, eos_every=11)
    assert full.completion_ids == eager.completion_ids
    for a, b in zip(full.behaviour_logps, eager.behaviour_logps, strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)


def test_static_buffers_are_reused_between_calls_and_rounds(policy):
    engine = HFEngine(policy, micro_batch=32, decode="static")
    sampling = Sampling(temperature=1.0, max_new_tokens=8)
    engine.generate(prompts_of(policy), 4, sampling)
    buffers = engine._static.buf
    engine.generate(prompts_of(policy)[:2], 2, sampling)
    assert engine._static.buf is buffers  # fewer rows, same length bucket: no reallocation


def test_bucket_is_the_next_power_of_two():
    assert [bucket(r) for r in (1, 8, 9, 64, 65, 1000)] == [8, 8, 16, 64, 128, 1024]


def test_cuda_graph_decode_needs_a_gpu(policy):
    engine = HFEngine(policy, micro_batch=8, decode="cuda_graph")
    with pytest.raises(ConfigError, match="CUDA"):
        engine.generate(prompts_of(policy)[:1], 1, Sampling(max_new_tokens=2))
