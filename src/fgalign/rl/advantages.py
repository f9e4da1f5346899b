"""Advantage estimators that keep per-token rewards, as a small registry (after verl's `core_algos.py`).

Each estimator maps the (B, T) reward tensor — RM rewards minus β·KL, per token — to (advantages, returns),
both (B, T) and 0 outside `response_mask`. They differ only in the baseline that is subtracted:

  gae          A_t = Σ_k (γλ)^k δ_{t+k},  δ_t = r_t + γ V_{t+1} − V_t      the learned critic V (PPO's default)
  reinforce++  A_t = G_t − mean of G over the batch's response tokens       no critic (Hu, 2025, REINFORCE++)
  rloo         A_t = G_t − mean_{j≠i} G^{(j)}_t over the other samples of    no critic; a leave-one-out group
               the same prompt, position by position                        baseline (Ahmadian et al., 2024)

with G_t = Σ_{k≥t} γ^{k−t} r_k the return-to-go, so every token is credited with the rewards at and after
it: dense token rewards keep their place in all three. `returns` (what the value model is fitted to) are the
GAE returns for `gae` and G_t for the others, whose critic is then only a diagnostic (explained variance).

`rloo` needs `group_ids` (B,): rollouts with the same id are samples of the same prompt (PPO's
`--group-size k` draws batch/k prompts and samples each k times). A baseline built from the *other* samples
does not depend on sample i's own actions, so the gradient stays unbiased.
"""
from __future__ import annotations

from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from fgalign.rl.ppo import gae

AdvantageEstimator = Literal["gae", "reinforce++", "rloo"]
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {}


def register(name: str):
    """Add an estimator under `name` (one of AdvantageEstimator's names)."""
    def add(fn):
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return add


def returns_to_go(rewards: Tensor, response_mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + γ G_{t+1}, 0 after the last response token.  # (B, T)"""
    rewards = torch.where(response_mask, rewards, 0.0)
    G = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(response_mask[:, t], rewards[:, t] + gamma * running, 0.0)
        G[:, t] = running
    return G


@register("gae")
def gae_estimator(rewards: Tensor, values: Tensor, response_mask: Tensor, *, gamma: float, lam: float,
                  group_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    return gae(rewards, values, response_mask, gamma, lam)


@register("reinforce++")
def reinforce_pp(rewards: Tensor, values: Tensor, response_mask: Tensor, *, gamma: float, lam: float,
                 group_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    G = returns_to_go(rewards, response_mask, gamma)  # (B, T)
    baseline = G[response_mask].mean() if response_mask.any() else G.new_zeros(())  # the batch's mean return
    return torch.where(response_mask, G - baseline, 0.0), G


@register("rloo")
def rloo(rewards: Tensor, values: Tensor, response_mask: Tensor, *, gamma: float, lam: float,
         group_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    if group_ids is None:
        raise ValueError("rloo needs group_ids: several samples per prompt (--group-size k, k >= 2)")
    G = returns_to_go(rewards, response_mask, gamma)  # (B, T), 0 past each response's end
    same = group_ids[:, None] == group_ids[None, :]  # (B, B): samples of the same prompt
    counts = same.sum(dim=1)  # (B,) group sizes, self included
    if (counts < 2).any():
        raise ValueError("rloo needs at least 2 samples of every prompt in the batch (--group-size k, k >= 2)")
    group_sum = same.to(G.dtype) @ G  # (B, T): Σ_j in the group of i of G^{(j)}_t
    baseline = (group_sum - G) / (counts[:, None] - 1).to(G.dtype)  # (B, T): mean over the others
    return torch.where(response_mask, G - baseline, 0.0), G


def estimate_advantages(name: str, rewards: Tensor, values: Tensor, response_mask: Tensor, *, gamma: float,
                        lam: float, group_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(advantages, returns) by the estimator `name`.  # (B, T) each"""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator '{name}': expected one of {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name](rewards, values, response_mask, gamma=gamma, lam=lam, group_ids=group_ids)


ESTIMATOR_NAMES: tuple[str, ...] = get_args(AdvantageEstimator)
assert set(ESTIMATOR_NAMES) == set(ADVANTAGE_ESTIMATORS), "every declared estimator is registered, and only those"
