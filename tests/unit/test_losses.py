"""The loss math of RAPID.md against hand computations on small categorical policies."""

from dataclasses import fields

import pytest
import torch

from rapid_core.advantages import group_advantages
from rapid_core.config import make_config
from rapid_core.losses import LOSSES, combine_metrics, grpo_loss, pg_loss, rapid_loss
from rapid_core.metrics import StepMetrics

TOKEN = make_config(is_level="token", is_clip=2.0, norm="token_mean")


def categorical_logp(theta: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """log pi(y) for a one-step softmax policy; shape [n, 1] like a one-token completion."""
    return torch.log_softmax(theta, -1)[ys][:, None]


def test_weights_are_one_at_staleness_zero():
    logp = torch.randn(4, 6)
    mask = torch.ones(4, 6)
    for level in ("token", "sequence"):
        _, m = rapid_loss(logp.clone().requires_grad_(), logp, torch.randn(4), mask, make_config(is_level=level))
        assert m["w_mean"] == pytest.approx(1.0) and m["w_min"] == pytest.approx(1.0)
        assert m["w_max"] == pytest.approx(1.0) and m["ess"] == pytest.approx(1.0)
        assert m["clip_frac"] == 0.0 and m["approx_kl"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("clip", [2.0, 1.3, None])
def test_gradient_equals_truncated_is_policy_gradient_by_hand(clip):
    torch.manual_seed(0)
    k = 5
    theta = torch.randn(k, requires_grad=True)
    mu_logits = theta.detach() + torch.randn(k)  # a stale behaviour policy
    mu = torch.softmax(mu_logits, -1)
    ys = torch.tensor([0, 1, 1, 3, 4, 2])
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.0, 0.5])
    logp = categorical_logp(theta, ys)
    loss, _ = rapid_loss(logp, torch.log(mu)[ys][:, None], adv, torch.ones(6, 1), make_config(is_clip=clip))
    loss.backward()

    pi = torch.softmax(theta.detach(), -1)
    expected = torch.zeros(k)
    for y, a in zip(ys.tolist(), adv.tolist(), strict=True):
        w = pi[y] / mu[y]
        w = min(w, clip) if clip is not None else w
        grad_logp = torch.nn.functional.one_hot(torch.tensor(y), k).float() - pi  # d log softmax
        expected -= w * a * grad_logp
    expected /= len(ys)
    assert torch.allclose(theta.grad, expected, atol=1e-6)


def test_truncation_caps_weights_and_counts_clipped_tokens():
    logp = torch.log(torch.tensor([[0.9], [0.5], [0.2]]))
    blogp = torch.log(torch.tensor([[0.1], [0.5], [0.4]]))  # ratios 9, 1, 0.5
    _, m = rapid_loss(logp.clone().requires_grad_(), blogp, torch.ones(3), torch.ones(3, 1), TOKEN)
    assert m["w_max"] == pytest.approx(2.0) and m["w_min"] == pytest.approx(0.5)
    assert m["clip_frac"] == pytest.approx(1 / 3)
    w = torch.tensor([2.0, 1.0, 0.5])
    assert m["ess"] == pytest.approx(float(w.sum() ** 2 / (3 * (w**2).sum())))
    rho = torch.tensor([9.0, 1.0, 0.5])
    assert m["approx_kl"] == pytest.approx(float(((rho - 1) - rho.log()).mean()), rel=1e-5)
    _, none = rapid_loss(logp.clone().requires_grad_(), blogp, torch.ones(3), torch.ones(3, 1),
                         make_config(is_clip=None))
    assert none["w_max"] == pytest.approx(9.0) and none["clip_frac"] == 0.0


def test_exact_expectation_over_behaviour_policy_is_the_true_policy_gradient():
    """Unbiased while no weight exceeds c: E_mu[w A grad log pi] = grad E_pi[R]."""
    torch.manual_seed(1)
    k = 4
    theta = torch.randn(k, requires_grad=True)
    mu = torch.softmax(theta.detach() + 0.1 * torch.randn(k), -1)
    reward = torch.tensor([1.0, 0.0, 0.5, 2.0])
    is_grad = torch.zeros(k)
    for y in range(k):
        logp = categorical_logp(theta, torch.tensor([y]))
        loss, m = rapid_loss(logp, torch.log(mu[y]).view(1, 1), reward[y : y + 1], torch.ones(1, 1), TOKEN)
        assert m["w_max"] < 2.0
        (g,) = torch.autograd.grad(loss, theta)
        is_grad += mu[y] * g
    true_objective = (torch.softmax(theta, -1) * reward).sum()
    (true_grad,) = torch.autograd.grad(-true_objective, theta)
    assert torch.allclose(is_grad, true_grad, atol=1e-6)


def test_sequence_level_weight_is_exp_of_mean_log_ratio_truncated():
    logp = torch.zeros(2, 3)
    blogp = torch.tensor([[-0.1, -0.2, 0.0], [-3.0, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    _, m = rapid_loss(logp.clone().requires_grad_(), blogp, torch.ones(2), mask, make_config(is_level="sequence"))
    w0 = torch.exp(torch.tensor(0.15))  # mean of 0.1 and 0.2 over the first row's 2 tokens
    assert m["w_min"] == pytest.approx(float(w0), rel=1e-5)
    assert m["w_max"] == pytest.approx(2.0)  # exp(2) truncated at c


def test_normalisers():
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, 2.0])
    # per-token term = -w A logp = A (w = 1)
    token, _ = rapid_loss(logp, logp.detach(), adv, mask, make_config(norm="token_mean"))
    assert float(token) == pytest.approx((3 * 1 + 1 * 2) / 4)
    seq, _ = rapid_loss(logp, logp.detach(), adv, mask, make_config(norm="seq_mean"))
    assert float(seq) == pytest.approx((1 + 2) / 2)
    const, _ = rapid_loss(logp, logp.detach(), adv, mask, make_config(norm="constant", max_new_tokens=8))
    assert float(const) == pytest.approx(5 / (2 * 8))


def test_grpo_at_ratio_one_equals_the_on_policy_gradient():
    torch.manual_seed(2)
    theta = torch.randn(6, requires_grad=True)
    ys = torch.tensor([0, 2, 2, 5])
    adv = torch.tensor([0.5, -1.0, 1.0, 0.25])
    grads = []
    for fn in (grpo_loss, pg_loss, rapid_loss):
        logp = categorical_logp(theta, ys)
        loss, _ = fn(logp, logp.detach(), adv, torch.ones(4, 1), TOKEN)
        grads.append(torch.autograd.grad(loss, theta)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
    assert torch.allclose(grads[2], grads[1], atol=1e-7)


def test_grpo_clips_the_ratio_at_one_plus_epsilon():
    logp = torch.log(torch.tensor([[0.9]])).requires_grad_()
    blogp = torch.log(torch.tensor([[0.5]]))  # ratio 1.8 > 1.2 with positive advantage: no gradient
    loss, m = grpo_loss(logp, blogp, torch.tensor([1.0]), torch.ones(1, 1), make_config(ppo_epsilon=0.2))
    (g,) = torch.autograd.grad(loss, logp)
    assert float(g.abs().sum()) == 0.0 and m["clip_frac"] == 1.0


def test_equal_rewards_give_zero_advantage():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    for scale in ("none", "std"):
        for baseline in ("mean", "loo"):
            adv, zero = group_advantages(rewards, 3, scale=scale, baseline=baseline)
            assert torch.all(adv[:3] == 0) and torch.all(adv[6:] == 0)
            assert zero.tolist() == [True, False, True]
            assert not torch.isnan(adv).any()


def test_group_advantage_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    adv, _ = group_advantages(rewards, 4)
    assert adv.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    loo, _ = group_advantages(rewards, 4, baseline="loo")
    assert loo.tolist() == pytest.approx([1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3])
    std, _ = group_advantages(rewards, 4, scale="std")
    s = 0.5 / (0.5 + 1e-6)
    assert std.tolist() == pytest.approx([s, -s, -s, s], rel=1e-6)


def test_kl_penalty_is_zero_at_the_reference_and_positive_away_from_it():
    logp = torch.log(torch.tensor([[0.5, 0.2]])).requires_grad_()
    s = make_config(kl_beta=0.5)
    _, m = rapid_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), s, ref_logp=logp.detach())
    assert m["kl_ref"] == pytest.approx(0.0, abs=1e-7)
    _, m = rapid_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), s, ref_logp=logp.detach() - 0.5)
    assert m["kl_ref"] > 0


def test_chunk_metrics_combine_as_each_loss_declares():
    parts = [({"w_min": 0.5, "w_max": 1.5, "w_mean": 1.0}, 30), ({"w_min": 0.8, "w_max": 3.0, "w_mean": 2.0}, 10)]
    rules = {"w_min": "min", "w_max": "max", "w_mean": "mean"}
    assert combine_metrics(parts, rules) == {"w_min": 0.5, "w_max": 3.0, "w_mean": 1.25}
    with pytest.raises(KeyError, match="w_mean"):
        combine_metrics(parts, {"w_min": "min", "w_max": "max"})


@pytest.mark.parametrize("name", ["rapid", "grpo", "pg"])
def test_every_loss_declares_how_each_of_its_step_metrics_combines(name):
    loss = LOSSES.get(name)
    logp = torch.randn(2, 3, requires_grad=True)
    _, metrics = loss.fn(logp, logp.detach() - 0.1, torch.randn(2), torch.ones(2, 3), TOKEN)
    assert set(metrics) == set(loss.combine)
    step_fields = {f.name for f in fields(StepMetrics)}
    assert set(metrics) <= step_fields  # a step record can hold every metric the loss reports
