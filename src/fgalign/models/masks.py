"""Masked reductions and last-token placement on (B, T) tensors, shared by the reward models and PPO.

Masks are always passed in, never derived from pad ids. Masked-out entries are replaced with `torch.where`
before any arithmetic, so a −inf there (a log-prob after EOS) never turns into NaN (0 · −inf).
"""
from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = -1) -> Tensor:
    """Sum of x where mask is nonzero, over `dim` (the last by default; None: all).  (B, T) -> (B,)"""
    x = torch.where(mask.bool(), x, 0.0)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x where mask is nonzero, over `dim` (None: all entries, a scalar); 0 for an empty mask."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp_min(1)


def gather_last(x: Tensor, last_index: Tensor) -> Tensor:
    """x[b, last_index[b]].  (B, T), (B,) -> (B,)"""
    return x.gather(1, last_index.long().unsqueeze(1)).squeeze(1)


def at_last_index(scores: Tensor, last_index: Tensor, T: int) -> Tensor:
    """A (B, T) tensor that is zero except `scores[b]` at `last_index[b]` (a sequence score placed at EOS)."""
    out = torch.zeros(scores.shape[0], T, dtype=scores.dtype, device=scores.device)  # (B, T)
    return out.scatter(1, last_index.long()[:, None], scores[:, None])
