"""The output layer's token log-probs (head_logps.py): with a frozen head the gradient computed in the
forward pass equals autograd's through log-softmax, and no [tokens, vocabulary] tensor is kept for
backward; with a trainable head the head's own gradient is right too."""

import pytest
import torch

from rapid_core.head_logps import chunk_logps

TOKENS, D, VOCAB = 24, 16, 300


def reference(h, weight, targets, temperature):
    logp_all = torch.log_softmax((h @ weight.t()).float() / temperature, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(1, targets[:, None]).squeeze(1), entropy.detach()


def inputs(seed=0, head_grad=False):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(TOKENS, D, generator=gen, dtype=torch.float64).float().requires_grad_(True)
    # Logits spread over ~+-20, as a trained model's are: a wrong max shift or normaliser would show.
    weight = (torch.randn(VOCAB, D, generator=gen) * 1.5).requires_grad_(head_grad)
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    # A different weight per token, so that a gradient landing on the wrong row shows.
    upstream = torch.linspace(-1.0, 2.0, TOKENS)
    return h, weight, targets, upstream


def outputs(fn, h, weight, targets, temperature, upstream):
    h.grad = weight.grad = None
    logp, entropy = fn(h, weight, targets, temperature)
    (logp * upstream).sum().backward()
    return logp.detach(), entropy, h.grad.clone(), None if weight.grad is None else weight.grad.clone()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_a_frozen_head_gives_autograds_log_probs_entropy_and_gradient(temperature):
    h, weight, targets, upstream = inputs()
    got = outputs(chunk_logps, h, weight, targets, temperature, upstream)
    want = outputs(reference, h, weight, targets, temperature, upstream)
    assert torch.allclose(got[0], want[0], atol=1e-5)
    assert torch.allclose(got[1], want[1], atol=1e-4)
    assert torch.allclose(got[2], want[2], atol=1e-5)
    assert got[3] is None and not got[1].requires_grad
    assert float(want[2].abs().max()) > 0.1  # the gradient compared is not ~0


def test_a_frozen_head_keeps_no_vocabulary_sized_tensor_for_backward():
    h, weight, targets, _ = inputs()
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunk_logps(h, weight, targets, 1.0)
    assert shapes == [(TOKENS, D)]


def test_a_trainable_head_gets_its_own_gradient():
    h, weight, targets, upstream = inputs(seed=1, head_grad=True)
    got = outputs(chunk_logps, h, weight, targets, 0.7, upstream)
    want = outputs(reference, h, weight, targets, 0.7, upstream)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_without_gradient_the_same_values_and_no_graph():
    h, weight, targets, _ = inputs(seed=2)
    with torch.no_grad():
        logp, entropy = chunk_logps(h, weight, targets, 0.7)
    want = reference(h.detach(), weight, targets, 0.7)
    assert not logp.requires_grad
    assert torch.allclose(logp, want[0], atol=1e-5) and torch.allclose(entropy, want[1], atol=1e-4)


def test_bf16_head_under_autocast_stays_within_bf16_rounding():
    h, weight, targets, upstream = inputs(seed=3)
    w16 = weight.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = outputs(chunk_logps, h, w16, targets, 1.0, upstream)
    want = outputs(reference, h, w16.float(), targets, 1.0, upstream)
    assert got[0].dtype == torch.float32 and got[2].dtype == torch.float32
    assert float((got[0] - want[0]).abs().max()) < 0.25
    assert float((got[2] - want[2]).abs().max()) < 0.05 * float(want[2].abs().max())


def test_logits_in_the_thousands_stay_finite():
    h, weight, targets, upstream = inputs(seed=4)
    big = (weight * 200).detach()  # logits of several thousand: exp overflows without the max shift
    got = outputs(chunk_logps, h, big, targets, 1.0, upstream)
    want = outputs(reference, h, big, targets, 1.0, upstream)
    assert all(bool(torch.isfinite(t).all()) for t in got[:3])
    assert torch.allclose(got[0], want[0], atol=1e-3) and torch.allclose(got[2], want[2], atol=1e-2)
