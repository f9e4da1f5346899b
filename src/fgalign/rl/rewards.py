"""The (B, T) reward tensor PPO learns from: the reward model's part, then minus β · KL.

Every method is one choice of `rm_rewards`; everything downstream (GAE, losses) is shared, so methods
differ only where they should (DESIGN §1.5).
  token           rm[b, t] = r_t, the token RM's reward at t (optionally scaled)
  token-shaped    rm[b, t] = S_t − S_{t−1} from the RM's prefix scores (S_{−1} = 0): sums to S_last
  token+sequence  α · r_t plus the sequence score at last_index
  sequence        zeros except the sequence score at last_index (the standard PPO baseline)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from fgalign.models.masks import at_last_index

# The names, declared once: the Literals type the PPO options (and give the CLI its choices), the tuples check input.
RewardMode = Literal["token", "token-shaped", "token+sequence", "sequence"]
RewardScale = Literal["raw", "mean", "whiten", "total-std"]
TokenCenter = Literal["median", "none"]
REWARD_MODES: tuple[str, ...] = get_args(RewardMode)
REWARD_SCALES: tuple[str, ...] = get_args(RewardScale)
TOKEN_CENTERS: tuple[str, ...] = get_args(TokenCenter)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean) / std over the masked entries, 0 elsewhere (mean kept when `shift_mean` is False)."""
    n = mask.sum().clamp_min(1)
    mean = torch.where(mask, x, 0.0).sum() / n
    var = torch.where(mask, (x - mean) ** 2, 0.0).sum() / n
    white = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        white = white + mean
    return torch.where(mask, white, 0.0)


def median_centered(token_rewards: Tensor, response_mask: Tensor) -> Tensor:
    """r_t minus the median r_t over the batch's response tokens, 0 outside.  # (B, T)

    A token RM's correct tokens sit near, not at, 0 (−0.08 to −0.2 per token in the default world, despite
    the anchor). Summed over a response that offset is a length term: every token dropped pays, so PPO learns
    shorter answers that miss items (measured: length 15 → 8 tokens in 15 iterations without KL). Most
    tokens are correct, so the median is the correct-token level: after centring a correct token earns ~0,
    a mistake keeps its full penalty, and neither shortening nor padding pays.
    """
    # nanmedian: a non-finite reward stays where it is (the trainer names it) instead of spreading to every token.
    median = token_rewards[response_mask].nanmedian() if response_mask.any() else token_rewards.new_zeros(())
    return torch.where(response_mask, token_rewards - median, 0.0)


def shaped_rewards(prefix_scores: Tensor, response_mask: Tensor) -> Tensor:
    """Potential-based shaping: S_t − S_{t−1} with S_{−1} = 0, so each row sums to S_last.  # (B, T)"""
    S = torch.where(response_mask, prefix_scores, 0.0)  # (B, T)
    previous = torch.nn.functional.pad(S[:, :-1], (1, 0))  # (B, T): S_{t-1}
    return torch.where(response_mask, S - previous, 0.0)


def total_std_scaled(rm: Tensor) -> Tensor:
    """Divide by the batch std of each response's total reward, without centring (DESIGN §6)."""
    std = rm.sum(dim=1).std(correction=0)  # scalar: spread of per-response totals
    return rm / std if std > 1e-6 else rm


@dataclass
class RewardSettings:
    """How the reward model's output becomes the (B, T) reward: `rm_rewards` takes this and nothing else.

    Declared once, here, and used by every consumer so that they cannot drift apart: `fgalign ppo` (PPOConfig
    inherits these options: same names, same docs, same defaults), the verl plug-in
    (`reward.reward_kwargs.fgalign`), best-of-n's token ranking and the OpenRLHF server (`SEQUENCE_AT_LAST`)."""

    reward: RewardMode = "token"
    """How the RM's output becomes rewards: per-token r_t, potential-shaped S_t − S_{t−1}, α·r_t plus the
    sequence score at the last token, or the sequence score at the last token only."""
    reward_scale: RewardScale = "total-std"
    """raw; mean (token rewards / length); whiten (over the batch); total-std (divide by the batch std of each
    response's total reward, no centring: DESIGN §6 found it keeps the length term out)."""
    alpha: float = 1.0
    """Weight of the token rewards in `token+sequence`."""
    token_center: TokenCenter = "median"
    """Subtract the batch median of the token RM's r_t (token, token+sequence): correct tokens then earn ~0 and
    the response's total carries no length term (without it PPO learned to drop items); "none" keeps r_t as
    the RM gives it."""

    def problem(self) -> str | None:
        """Why these settings make no sense, or None when they do (the one check every consumer runs)."""
        if self.reward not in REWARD_MODES:
            return f"unknown reward mode '{self.reward}': expected one of {REWARD_MODES}"
        if self.reward_scale not in REWARD_SCALES:
            return f"unknown reward scale '{self.reward_scale}': expected one of {REWARD_SCALES}"
        if self.token_center not in TOKEN_CENTERS:
            return f"unknown token centring '{self.token_center}': expected one of {TOKEN_CENTERS}"
        if self.reward_scale in ("mean", "whiten") and self.reward == "token-shaped":
            return (f"reward scale '{self.reward_scale}' would break the telescoping sum of 'token-shaped' rewards; "
                    "use 'raw' or 'total-std'")
        if self.reward_scale == "mean" and self.reward == "sequence":
            return "reward scale 'mean' divides token rewards by length; 'sequence' has none"
        return None


# The sequence score at the last token, unscaled: what an engine that takes one number per response gets
# (OpenRLHF, verl without the placement).
SEQUENCE_AT_LAST = RewardSettings(reward="sequence", reward_scale="raw")


# The reward modes, a registry (as verl's core_algos does for advantage estimators): mode -> (B, T) reward from
# the centred/scaled token rewards `dense`, the prefix scores S_t, the sequence score at the last token, α.
_MODES: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
    "token": lambda dense, shaped, at_last, alpha: dense,
    "token-shaped": lambda dense, shaped, at_last, alpha: shaped,
    "token+sequence": lambda dense, shaped, at_last, alpha: alpha * dense + at_last,
    "sequence": lambda dense, shaped, at_last, alpha: at_last,
}
assert tuple(_MODES) == REWARD_MODES, "every RewardMode needs its rewards"


def rm_rewards(settings: RewardSettings, token_rewards: Tensor, prefix_scores: Tensor, sequence_score: Tensor,
               response_mask: Tensor, last_index: Tensor) -> Tensor:
    """The reward model's part of the reward, per response token.  # (B, T)

    `settings.token_center` ("median" or "none") applies to the token RM's r_t in `token` and `token+sequence`
    (see `median_centered`); the sequence score and the shaped rewards carry no per-token offset.

    `settings.reward_scale`: raw; mean (token rewards / response length, so a mean-of-tokens RM's rows sum to
    its sequence score); whiten (token rewards whitened over the batch's tokens, sequence scores over the
    batch); total-std (everything divided by the batch std of per-response totals, no centring).
    """
    if (problem := settings.problem()) is not None:
        raise ValueError(problem)
    scale = settings.reward_scale
    T = response_mask.shape[1]
    length = response_mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    dense = torch.where(response_mask, token_rewards, 0.0)  # (B, T)
    if settings.token_center == "median":
        dense = median_centered(dense, response_mask)
    if scale == "mean":
        dense = dense / length
    elif scale == "whiten":
        dense = masked_whiten(dense, response_mask)
        sequence_score = (sequence_score - sequence_score.mean()) / (sequence_score.std(correction=0) + 1e-8)

    shaped = shaped_rewards(prefix_scores, response_mask)
    rm = _MODES[settings.reward](dense, shaped, at_last_index(sequence_score, last_index, T), settings.alpha)
    return total_std_scaled(rm) if scale == "total-std" else rm


def truncation_penalty(rm: Tensor, truncated: Tensor, last_index: Tensor, penalty: float) -> Tensor:
    """Subtract `penalty` at the last token of responses cut at the length limit without EOS.  # (B, T)"""
    return rm - at_last_index(truncated.to(rm.dtype) * penalty, last_index, rm.shape[1])


def compose_rewards(rm: Tensor, kl_t: Tensor, beta: float, response_mask: Tensor,
                    clip: float | None = None) -> Tensor:
    """rewards = rm − β · kl_t on response tokens, 0 elsewhere (rm optionally clipped to ±clip).  # (B, T)"""
    if clip is not None:
        rm = rm.clamp(-clip, clip)
    return torch.where(response_mask, rm - beta * kl_t, 0.0)
