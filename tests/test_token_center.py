"""Median centring of token rewards removes the length term a token RM's correct-token offset creates."""
import torch

from fgalign.rl.rewards import median_centered, RewardSettings, rm_rewards


def _batch():
    # Two answers, identical but the second has 3 more correct tokens; correct tokens sit at −0.2, a mistake −4.
    r = torch.tensor([[-0.2, -4.0, -0.2, -0.2, 0.0, 0.0, 0.0],
                      [-0.2, -4.0, -0.2, -0.2, -0.2, -0.2, -0.2]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    return r, mask, mask.sum(1) - 1


def test_raw_token_rewards_pay_for_shortness_and_centred_ones_do_not():
    r, mask, last = _batch()
    raw = rm_rewards(RewardSettings("token", "raw", 1.0, "none"), r, r, r.mean(1), mask, last).sum(1)
    assert raw[0] > raw[1]  # the shorter answer wins on length alone
    centred = rm_rewards(RewardSettings("token", "raw", 1.0, "median"), r, r, r.mean(1), mask, last).sum(1)
    torch.testing.assert_close(centred[0], centred[1])
    torch.testing.assert_close(centred, torch.tensor([-3.8, -3.8]))  # the mistake keeps its penalty


def test_median_centering_ignores_padding_and_keeps_zeros_outside():
    r, mask, _ = _batch()
    out = median_centered(r, mask)
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum())))
    assert torch.count_nonzero(out[mask]) == 2  # only the two mistakes differ from the correct-token level
