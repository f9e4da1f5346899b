"""PPO math on (B, T) tensors: GAE, clipped policy and value losses, and the statistics logged with them.

Pure functions; `response_mask` (bool, (B, T)) marks response tokens. Masked entries are replaced with
`torch.where` before any arithmetic, so a −inf log-prob after EOS never turns into NaN (0 · −inf).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fgalign.models.masks import masked_mean


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log π(token) under `logits`.  (B, T, V), (B, T) -> (B, T)"""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical given by `logits`.  (B, T, V) -> (B, T)"""
    return entropy_from_logp(torch.log_softmax(logits.float(), dim=-1))


def entropy_from_logp(logp: Tensor) -> Tensor:
    """Entropy from log-probabilities (a log_softmax output).  (B, T, V) -> (B, T)"""
    return -(logp.exp() * torch.nan_to_num(logp, neginf=0.0)).sum(-1)  # 0 · log 0 = 0 for banned tokens


def gae(rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens; returns (advantages, returns).  # (B, T) each

    δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γλ A_{t+1}, with V and A zero after the last response
    token (the episode ends there: the last token's reward is terminal).
    """
    rewards = torch.where(response_mask, rewards, 0.0)
    values = torch.where(response_mask, values, 0.0)
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = torch.where(response_mask[:, t], delta + gamma * lam * next_advantage, 0.0)
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    returns = torch.where(response_mask, advantages + values, 0.0)
    return advantages, returns


class PolicyLoss(NamedTuple):
    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, response_mask: Tensor,
                clip: float) -> PolicyLoss:
    """Clipped surrogate: mean over tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = π/π_old."""
    log_ratio = torch.where(response_mask, logprobs - old_logprobs, 0.0)  # (B, T)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), response_mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, response_mask)  # k3 of π_old → π
    return PolicyLoss(loss, clipfrac, approx_kl)


class ValueLoss(NamedTuple):
    loss: Tensor
    clipfrac: Tensor


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor, clip: float) -> ValueLoss:
    """Clipped value loss: ½ mean over tokens of max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_err > unclipped_err).float(), response_mask)
    return ValueLoss(loss, clipfrac)


def explained_variance(values: Tensor, returns: Tensor, response_mask: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R) over response tokens (1: perfect, 0: no better than a constant)."""
    var_returns = masked_mean((returns - masked_mean(returns, response_mask)) ** 2, response_mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, response_mask)) ** 2, response_mask)
    return 1.0 - var_residual / var_returns.clamp_min(1e-8)
