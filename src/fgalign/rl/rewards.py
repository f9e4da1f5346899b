"""The (B, T) reward tensor PPO learns from: the reward model's part, then minus β · KL.

Every method is one choice of `rm_rewards`; everything downstream (GAE, losses) is shared, so methods
differ only where they should (DESIGN §1.5).
  token           rm[b, t] = r_t, the token RM's reward at t (optionally scaled)
  token-shaped    rm[b, t] = S_t − S_{t−1} from the RM's prefix scores (S_{−1} = 0): sums to S_last
  token+sequence  α · r_t plus the sequence score at last_index
  sequence        zeros except the sequence score at last_index (the standard PPO baseline)
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from fgalign.models.masks import at_last_index

# The names, declared once: the Literals type the PPO options (and give the CLI its choices), the tuples check input.
RewardMode = Literal["token", "token-shaped", "token+sequence", "sequence"]
RewardScale = Literal["raw", "mean", "whiten", "total-std"]
TokenCenter = Literal["median", "none"]
REWARD_MODES: tuple[str, ...] = get_args(RewardMode)
REWARD_SCALES: tuple[str, ...] = get_args(RewardScale)


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
    shorter answers that miss items (issue 10: length 15 → 8 tokens in 15 iterations without KL). Most
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


def reward_options_problem(mode: str, scale: str) -> str | None:
    """Why a (mode, scale) pair makes no sense, or None when it does."""
    if mode not in REWARD_MODES:
        return f"unknown reward mode '{mode}': expected one of {REWARD_MODES}"
    if scale not in REWARD_SCALES:
        return f"unknown reward scale '{scale}': expected one of {REWARD_SCALES}"
    if scale in ("mean", "whiten") and mode == "token-shaped":
        return f"reward scale '{scale}' would break the telescoping sum of 'token-shaped' rewards; use 'raw' or 'total-std'"
    if scale == "mean" and mode == "sequence":
        return "reward scale 'mean' divides token rewards by length; 'sequence' has none"
    return None


def rm_rewards(mode: str, token_rewards: Tensor, prefix_scores: Tensor, sequence_score: Tensor,
               response_mask: Tensor, last_index: Tensor, scale: str = "raw", alpha: float = 1.0,
               center: str = "none") -> Tensor:
    """The reward model's part of the reward, per response token.  # (B, T)

    `center` ("median" or "none") applies to the token RM's r_t in `token` and `token+sequence` (see
    `median_centered`); the sequence score and the shaped rewards carry no per-token offset.

    `scale`: raw; mean (token rewards / response length, so a mean-of-tokens RM's rows sum to its sequence
    score); whiten (token rewards whitened over the batch's tokens, sequence scores over the batch);
    total-std (everything divided by the batch std of per-response totals, no centring).
    """
    if (problem := reward_options_problem(mode, scale)) is not None:
        raise ValueError(problem)
    T = response_mask.shape[1]
    length = response_mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    dense = torch.where(response_mask, token_rewards, 0.0)  # (B, T)
    if center == "median":
        dense = median_centered(dense, response_mask)
    if scale == "mean":
        dense = dense / length
    elif scale == "whiten":
        dense = masked_whiten(dense, response_mask)
        sequence_score = (sequence_score - sequence_score.mean()) / (sequence_score.std(correction=0) + 1e-8)

    if mode == "token":
        rm = dense
    elif mode == "token-shaped":
        rm = shaped_rewards(prefix_scores, response_mask)
    elif mode == "token+sequence":
        rm = alpha * dense + at_last_index(sequence_score, last_index, T)
    else:  # "sequence": reward_options_problem ruled out anything else
        rm = at_last_index(sequence_score, last_index, T)
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
