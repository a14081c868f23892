"""Packed bf16 linears (a CPU's static decode step): the same products as ``F.linear``, and never a
stale weight after the policy changes between rounds."""

import pytest
import torch

from rapid_core.config import make_config
from rapid_core.engines import HFEngine, Sampling, packed_linear
from rapid_core.logprobs import completion_logps
from rapid_core.models import load_policy, prompt_token_ids

BF16_ONEDNN = torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.skipif(not BF16_ONEDNN, reason="no bf16 oneDNN on this CPU")
def test_a_packed_linear_equals_f_linear_and_repacks_after_an_in_place_update():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40, bias=True).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(64, 1, 96, dtype=torch.bfloat16)
    packed = packed_linear.PackedLinears([lin], rows=64)
    packed.refresh()
    assert torch.allclose(packed.linear(lin, x).float(), lin(x).float(), atol=1e-2, rtol=1e-2)
    first = packed._packed[lin]
    packed.refresh()
    assert packed._packed[lin] is first  # unchanged weight: not packed again
    with torch.no_grad():
        lin.weight.mul_(-3)
    packed.refresh()
    assert packed._packed[lin] is not first
    assert torch.allclose(packed.linear(lin, x).float(), lin(x).float(), atol=5e-2, rtol=1e-2)


@pytest.fixture(scope="module")
def bf16_policy(tiny_model):
    return load_policy(make_config(model=tiny_model, dtype="bf16", device="cpu"))


def test_the_static_loop_samples_from_the_current_weights_each_round(bf16_policy):
    policy = bf16_policy
    prompts = [prompt_token_ids(policy.tokenizer, [{"role": "user", "content": t}]) for t in ("Hi", "2+2?")]
    engine = HFEngine(policy, micro_batch=16, decode="static")
    sampling = Sampling(temperature=1.0, max_new_tokens=6)
    for round_ in range(2):
        if round_:  # a large update of every LoRA weight, in place as an optimizer step makes it
            torch.manual_seed(round_)
            with torch.no_grad():
                for p in policy.trainable_parameters():
                    p.add_(torch.randn_like(p))
        torch.manual_seed(7)
        out = engine.generate(prompts, 4, sampling)
        assert (engine._static.packed is not None) == BF16_ONEDNN
        with torch.no_grad():
            logp, _, _ = completion_logps(
                policy, out.prompt_ids, out.completion_ids, 1.0, prompt_pass="per_row"
            )
        for i, lps in enumerate(out.behaviour_logps):
            # bf16 sampling copy against the policy's own forward: rounding only, far from a stale
            # copy's log-probs after the update above.
            assert torch.allclose(torch.tensor(lps), logp[i, : len(lps)].float(), atol=0.15), (round_, i)
