"""Sequence-mode PPO equals TRL 1.12's PPOTrainer math once TRL's two known quirks are removed (issue 10).

`trl_rewards_and_advantages` transcribes the reward, GAE and whitening steps of
`trl.experimental.ppo.PPOTrainer.train` (TRL 1.12) on plain tensors, with two switches for its quirks:
- `score_past_eos`: TRL adds the score at `sequence_lengths + 1`, one slot past the last (EOS) token when the
  row has room (trl#1893), and keeps the value there (its padding mask for values is shifted by one);
- `bessel`: TRL's `masked_whiten` uses the unbiased (n − 1) variance.
With both off, every tensor equals fgalign's; with either on, they differ (so the test can fail).
"""
import pytest
import torch

from fgalign.rl.kl import kl_per_token
from fgalign.rl.ppo import gae
from fgalign.rl.rewards import compose_rewards, masked_whiten, RewardSettings, rm_rewards


def trl_masked_whiten(values, mask, bessel, shift_mean=True):
    mean = (values * mask).sum() / mask.sum()
    var = (((values - mean) ** 2) * mask).sum() / mask.sum()
    if bessel:
        var = var * mask.sum() / (mask.sum() - 1)
    white = (values - mean) * torch.rsqrt(var + 1e-8)
    return white if shift_mean else white + mean


def trl_rewards_and_advantages(logprobs, ref_logprobs, values, scores, sequence_lengths, kl_coef, gamma, lam,
                               score_past_eos=True, bessel=True):
    B, T = logprobs.shape
    idx = torch.arange(T).repeat(B, 1)
    padding_mask = idx > sequence_lengths[:, None]
    sequence_lengths_p1 = sequence_lengths + 1
    padding_mask_p1 = idx > sequence_lengths_p1[:, None]
    logprobs = torch.masked_fill(logprobs, padding_mask, 1.0)  # TRL's INVALID_LOGPROB on both: kl = 0 there
    ref_logprobs = torch.masked_fill(ref_logprobs, padding_mask, 1.0)
    values = torch.masked_fill(values, padding_mask_p1 if score_past_eos else padding_mask, 0)
    kl = logprobs - ref_logprobs
    rewards = -kl_coef * kl
    if score_past_eos:
        actual_end = torch.where(sequence_lengths_p1 < T, sequence_lengths_p1, sequence_lengths)
    else:
        actual_end = sequence_lengths
    rewards[torch.arange(B), actual_end] += scores
    lastgaelam, reversed_adv = 0, []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    returns = advantages + values
    advantages = trl_masked_whiten(advantages, (~padding_mask).float(), bessel)
    advantages = torch.masked_fill(advantages, padding_mask, 0)
    return rewards, advantages, returns


def ours(logprobs, ref_logprobs, values, scores, last, kl_coef, gamma, lam):
    T = logprobs.shape[1]
    mask = torch.arange(T)[None, :] <= last[:, None]  # (B, T)
    rm = rm_rewards(RewardSettings("sequence", "raw", 1.0, "none"), torch.zeros_like(logprobs), torch.zeros_like(logprobs), scores, mask, last)
    rewards = compose_rewards(rm, kl_per_token(logprobs, ref_logprobs, mask), kl_coef, mask)
    advantages, returns = gae(rewards, torch.where(mask, values, 0.0), mask, gamma, lam)
    return rewards, masked_whiten(advantages, mask), returns, mask


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    last = torch.tensor([8, 3, 0, 5, 7, 2])  # one row fills T (no EOS within the limit: no slot past it)
    return (-torch.rand(B, T, generator=g) * 3, -torch.rand(B, T, generator=g) * 3, torch.randn(B, T, generator=g),
            torch.randn(B, generator=g), last)


def test_sequence_mode_equals_trl_without_its_quirks(batch):
    logprobs, ref, values, scores, last = batch
    r_trl, a_trl, ret_trl = trl_rewards_and_advantages(logprobs, ref, values, scores, last, 0.05, 1.0, 0.95,
                                                       score_past_eos=False, bessel=False)
    r, a, ret, mask = ours(logprobs, ref, values, scores, last, 0.05, 1.0, 0.95)
    torch.testing.assert_close(torch.where(mask, r_trl, 0.0), r)
    torch.testing.assert_close(a_trl, a)
    torch.testing.assert_close(torch.where(mask, ret_trl, 0.0), ret)


@pytest.mark.parametrize("quirk", ["score_past_eos", "bessel"])
def test_each_trl_quirk_changes_the_advantages(batch, quirk):
    logprobs, ref, values, scores, last = batch
    flags = {"score_past_eos": False, "bessel": False, quirk: True}
    _, a_trl, _ = trl_rewards_and_advantages(logprobs, ref, values, scores, last, 0.05, 1.0, 0.95, **flags)
    _, a, _, _ = ours(logprobs, ref, values, scores, last, 0.05, 1.0, 0.95)
    assert not torch.allclose(a_trl, a)
