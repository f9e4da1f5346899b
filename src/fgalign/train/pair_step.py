"""The reward model's loss on a batch of pairs, and the same loss with its two halves run side by side.

A batch holds B pairs as (2B, L) rows: [0, B) the better responses, [B, 2B) the worse. The loss couples the
halves only through the head values h, so the halves' forward and backward passes are independent work:

    h_better, h_worse = forward(better rows), forward(worse rows)      # two threads
    loss = loss(h_better, h_worse) on detached copies; loss.backward()  # dloss/dh, cheap
    h_better.backward(dloss/dh_better), h_worse.backward(...)          # two threads

Each parameter then receives exactly two gradient contributions, one per half; a float sum of two terms does
not depend on their order, so the result repeats run to run. Each half is trimmed to its own longest row
(right padding and explicit masks: trailing padding changes no real position's value), which also drops
padding. Eligibility is `fgalign.models.side_by_side.can_run_side_by_side` plus: no mixed precision (autocast
is per thread) and no gradient checkpointing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fgalign.models.masks import gather_last, masked_mean
from fgalign.models.reward import head_values
from fgalign.models.reward_losses import sequence_rm_loss, token_rm_loss
from fgalign.models.side_by_side import run_side_by_side


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


def side_by_side_pair_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], level: str, loss: str,
                           anchor: float, scale: float = 1.0) -> torch.Tensor:
    """The pair loss with the parameters' gradients of `scale` x loss already accumulated; returns the loss.

    Forward and backward of the better and the worse halves run in two threads (see the module's note).
    """
    ids, attention = batch["input_ids"], batch["attention_mask"]
    n, L = ids.shape
    B = n // 2

    def forward(rows: slice) -> torch.Tensor:  # (B, L_half) → padded back to (B, L) below
        length = int(attention[rows].sum(1).max())
        return head_values(model, ids[rows, :length], attention[rows, :length])

    h_better, h_worse = run_side_by_side(lambda: forward(slice(0, B)), lambda: forward(slice(B, n)), True)
    leaves = [h.detach().requires_grad_() for h in (h_better, h_worse)]
    h = torch.cat([F.pad(x, (0, L - x.shape[1])) for x in leaves])  # (2B, L): padding is masked in every loss
    value, _ = loss_from_head(h, batch, level, loss, anchor)
    (value * scale).backward()  # dloss/dh on the two leaves only
    run_side_by_side(lambda: h_better.backward(leaves[0].grad), lambda: h_worse.backward(leaves[1].grad), True)
    return value.detach()
