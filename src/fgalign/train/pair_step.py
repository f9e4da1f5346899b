"""The reward model's loss on a batch of pairs: (2B, L) rows, [0, B) the better responses, [B, 2B) the worse.

Measured and left out (issue 15): running the two halves' forward and backward side by side in two threads,
one torch thread each, was slower than one pass on two threads on a quiet 2-core machine (65 against 49 ms
per step of the 2-layer benchmark RM); the PPO update's policy/value split does pay (fgalign.rl.update).
"""
from __future__ import annotations

import torch

from fgalign.models.masks import gather_last, masked_mean
from fgalign.models.reward import head_values
from fgalign.models.reward_losses import sequence_rm_loss, token_rm_loss


def loss_from_head(h: torch.Tensor, batch: dict[str, torch.Tensor], level: str, loss: str,
                   anchor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, pair accuracy) from head values h (2B, L) of a pair batch."""
    B = h.shape[0] // 2
    mask, labels, last = batch["response_mask"], batch["token_labels"], batch["last_index"]
    if level == "token":
        value = token_rm_loss(loss, anchor, h[:B], labels[:B], mask[:B], h[B:], labels[B:], mask[B:])
        score = masked_mean(h, mask.to(h.dtype), dim=-1)  # (2B,)
    else:
        value = sequence_rm_loss(h[:B], last[:B], h[B:], last[B:])
        score = gather_last(h, last)  # (2B,)
    return value, (score[:B] > score[B:]).float().mean()


def pair_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], level: str, loss: str,
              anchor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, pair accuracy) of one (2B, L) batch, one forward pass."""
    return loss_from_head(head_values(model, batch["input_ids"], batch["attention_mask"]), batch, level, loss, anchor)
