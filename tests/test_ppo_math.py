"""PPO math against hand-computed values: KL, rewards, GAE, losses, statistics."""
import math

import pytest
import torch

from fgalign.rl.kl import AdaptiveKLController, FixedKLController, kl_per_token
from fgalign.rl.ppo import (entropy_from_logits, explained_variance, gae, logprobs_from_logits, masked_mean,
                            policy_loss, value_loss)
from fgalign.rl.rewards import (at_last_index, compose_rewards, masked_whiten, RewardSettings, rm_rewards, shaped_rewards,
                                truncation_penalty)

NEG_INF = float("-inf")


def test_kl_estimators_by_hand_and_masked_minus_inf_is_zero():
    lp = torch.tensor([[math.log(0.5), math.log(0.2), NEG_INF]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4), NEG_INF]])
    mask = torch.tensor([[True, True, False]])
    k1 = kl_per_token(lp, ref, mask, "k1")
    torch.testing.assert_close(k1, torch.tensor([[math.log(2), math.log(0.5), 0.0]]))
    k3 = kl_per_token(lp, ref, mask, "k3")  # r = ref/p: 0.5 → 0.5 − 1 + ln 2;  2 → 2 − 1 − ln 2
    torch.testing.assert_close(k3, torch.tensor([[0.5 - 1 + math.log(2), 1 - math.log(2), 0.0]]))
    with pytest.raises(ValueError):
        kl_per_token(lp, ref, mask, "k2")


def test_compose_rewards_subtracts_beta_kl_on_response_only():
    rm = torch.tensor([[1.0, 0.0, 5.0], [0.0, 3.0, 0.0]])
    kl = torch.tensor([[0.5, -1.0, 0.0], [2.0, 1.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = compose_rewards(rm, kl, beta=0.1, response_mask=mask)
    torch.testing.assert_close(out, torch.tensor([[0.95, 0.1, 0.0], [-0.2, 2.9, -0.9]]))
    clipped = compose_rewards(rm, kl, beta=0.1, response_mask=mask, clip=2.0)
    torch.testing.assert_close(clipped[1], torch.tensor([-0.2, 1.9, -0.9]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: δ2 = 1 − .4 = .6; δ1 = .9·.4 − .2 = .16, A1 = .16 + .45·.6 = .43; δ0 = .9·.2 − .5, A0 = −.32 + .45·.43
    torch.testing.assert_close(adv, torch.tensor([[-0.1265, 0.43, 0.6], [0.35, 1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.3735, 0.63, 1.0], [1.35, 2.0, 0.0]]))


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.randn(4, 6)
    values = torch.randn(4, 6)
    mask = torch.arange(6)[None] < torch.tensor([[6], [3], [1], [5]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    r = torch.where(mask, rewards, 0.0)
    to_go = r.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(ret, torch.where(mask, to_go, 0.0))
    torch.testing.assert_close(adv, torch.where(mask, to_go - values, 0.0))


def test_policy_loss_by_hand_and_no_nan_from_masked_minus_inf():
    logprobs = torch.tensor([[0.0, math.log(2.0), NEG_INF]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, NEG_INF]])
    adv = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    out = policy_loss(logprobs, old, adv, mask, clip=0.2)
    # ratios (1, 2): unclipped (−1, −2), clipped (−1, −1.2) → max (−1, −1.2), mean −1.1; clipped on token 2
    torch.testing.assert_close(out.loss, torch.tensor(-1.1))
    torch.testing.assert_close(out.clipfrac, torch.tensor(0.5))
    torch.testing.assert_close(out.approx_kl, torch.tensor((1 - math.log(2)) / 2))
    out.loss.backward()
    assert torch.isfinite(logprobs.grad).all()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.5, 0.0, 0.0]]))  # clipped token: no gradient


def test_masked_minus_inf_logits_never_reach_the_loss_as_nan():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    banned = torch.zeros(1, 3, 5, dtype=torch.bool)
    banned[0, 2, 1] = True  # a banned token, sampled only after EOS
    masked_logits = logits.masked_fill(banned, NEG_INF)
    tokens = torch.tensor([[0, 3, 1]])
    mask = torch.tensor([[True, True, False]])
    lp = logprobs_from_logits(masked_logits, tokens)
    assert lp[0, 2] == NEG_INF
    out = policy_loss(lp, lp.detach(), torch.ones(1, 3), mask, clip=0.2)
    ent = masked_mean(entropy_from_logits(masked_logits), mask)
    (out.loss + ent).backward()
    assert torch.isfinite(out.loss) and torch.isfinite(ent) and torch.isfinite(logits.grad).all()


def test_value_loss_by_hand():
    v = torch.tensor([[1.0, 3.0, 100.0]])
    out = value_loss(v, torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[True, True, False]]), clip=0.5)
    # clipped values (.5, .5): errors unclipped (0, 4), clipped (.25, .25) → ½·mean(.25, 4)
    torch.testing.assert_close(out.loss, torch.tensor(1.0625))
    torch.testing.assert_close(out.clipfrac, torch.tensor(0.5))


def test_entropy_explained_variance_whiten():
    uniform = torch.zeros(1, 1, 4)
    torch.testing.assert_close(entropy_from_logits(uniform), torch.tensor([[math.log(4)]]))
    torch.testing.assert_close(entropy_from_logits(uniform.index_fill(2, torch.tensor([0]), NEG_INF)),
                               torch.tensor([[math.log(3)]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    ret = torch.tensor([[1.0, 2.0, 50.0], [3.0, 4.0, 5.0]])
    torch.testing.assert_close(explained_variance(ret, ret, mask), torch.tensor(1.0))
    torch.testing.assert_close(explained_variance(torch.full_like(ret, 3.0), ret, mask), torch.tensor(0.0))
    w = masked_whiten(ret, mask)
    assert w[0, 2] == 0
    torch.testing.assert_close(masked_mean(w, mask), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_mean(w**2, mask), torch.tensor(1.0), atol=1e-5, rtol=0)


def _fake_rm_outputs():
    token = torch.tensor([[1.0, -1.0, 3.0, 7.0], [2.0, 4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    token = torch.where(mask, token, 0.0)
    length = mask.sum(1, keepdim=True)
    prefix = torch.where(mask, token.cumsum(1) / torch.arange(1, 5), 0.0)  # running mean of r_1..r_t
    sequence = token.sum(1) / length.squeeze(1)  # mean r_t: (1, 3)
    last = mask.sum(1) - 1
    return token, prefix, sequence, mask, last


def test_rm_reward_modes_by_hand():
    token, prefix, seq, mask, last = _fake_rm_outputs()
    torch.testing.assert_close(rm_rewards(RewardSettings("token", "raw", 1.0, "none"), token, prefix, seq, mask, last), token)
    torch.testing.assert_close(rm_rewards(RewardSettings("sequence", "raw", 1.0, "none"), token, prefix, seq, mask, last),
                               torch.tensor([[0, 0, 1.0, 0], [0, 3.0, 0, 0]]))
    torch.testing.assert_close(rm_rewards(RewardSettings("token+sequence", "raw", 0.5, "none"), token, prefix, seq, mask, last),
                               torch.tensor([[0.5, -0.5, 2.5, 0], [1.0, 5.0, 0, 0]]))
    mean = rm_rewards(RewardSettings("token", "mean", 1.0, "none"), token, prefix, seq, mask, last)
    torch.testing.assert_close(mean.sum(1), seq)  # divided by length: rows sum to the sequence score
    totals_std = torch.tensor([1.0, 3.0]).std(correction=0)
    torch.testing.assert_close(rm_rewards(RewardSettings("sequence", "total-std", 1.0, "none"), token, prefix, seq, mask, last),
                               at_last_index(seq / totals_std, last, 4))
    white = rm_rewards(RewardSettings("token", "whiten", 1.0, "none"), token, prefix, seq, mask, last)
    torch.testing.assert_close(masked_mean(white, mask), torch.tensor(0.0), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="telescoping"):
        rm_rewards(RewardSettings("token-shaped", "whiten", 1.0, "none"), token, prefix, seq, mask, last)


def test_shaped_rewards_telescope_to_the_sequence_score():
    token, prefix, seq, mask, last = _fake_rm_outputs()
    shaped = rm_rewards(RewardSettings("token-shaped", "raw", 1.0, "none"), token, prefix, seq, mask, last)
    torch.testing.assert_close(shaped, torch.tensor([[1.0, -1.0, 1.0, 0], [2.0, 1.0, 0, 0]]))
    torch.testing.assert_close(shaped.sum(1), seq)
    g = torch.Generator().manual_seed(0)
    S = torch.randn(8, 11, generator=g)
    m = torch.arange(11)[None] < torch.randint(1, 12, (8, 1), generator=g)
    S_last = S.gather(1, (m.sum(1) - 1)[:, None]).squeeze(1)
    torch.testing.assert_close(shaped_rewards(S, m).sum(1), S_last)


def test_dense_reward_that_is_eos_only_equals_sequence_mode():
    """The rewards the trainer uses are the same tensor whichever path the sequence score takes."""
    _, prefix, seq, mask, last = _fake_rm_outputs()
    eos_only = at_last_index(seq, last, 4)
    kl = torch.randn(2, 4)
    for scale in ("raw", "total-std"):
        dense = rm_rewards(RewardSettings("token", scale, 1.0, "none"), eos_only, prefix, seq, mask, last)
        sparse = rm_rewards(RewardSettings("sequence", scale, 1.0, "none"), eos_only, prefix, seq, mask, last)
        assert torch.equal(compose_rewards(dense, kl, 0.1, mask), compose_rewards(sparse, kl, 0.1, mask))


def test_truncation_penalty_only_on_truncated_rows():
    rm = torch.zeros(2, 3)
    out = truncation_penalty(rm, torch.tensor([True, False]), torch.tensor([2, 1]), penalty=1.5)
    torch.testing.assert_close(out, torch.tensor([[0, 0, -1.5], [0, 0, 0.0]]))


def test_kl_controllers():
    ctl = AdaptiveKLController(beta=0.1, target=1.0, horizon=10)
    ctl.update(kl_per_response=2.0, n_responses=5)  # error clipped to +0.2: β · (1 + 0.2 · 5/10)
    assert ctl.beta == pytest.approx(0.11)
    ctl.update(kl_per_response=0.9, n_responses=5)  # error −0.1
    assert ctl.beta == pytest.approx(0.11 * 0.95)
    restored = AdaptiveKLController(beta=0.0, target=1.0, horizon=10)
    restored.load_state_dict(ctl.state_dict())
    assert restored.beta == ctl.beta
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.beta == 0.3
