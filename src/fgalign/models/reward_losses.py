"""Reward-model math as pure functions on tensors: sequence/prefix scores and the training losses.

Conventions: `r` is the head's output at every position, (B, T); `response_mask` is 1 on response tokens
(EOS included) and 0 on prompt and padding; `labels` holds the token labels on response positions
(-1 deleted/replaced, +1 inserted, 0 kept) and 0 elsewhere. Masks are always passed in, never derived
from pad ids.

Every loss is a mean of per-pair losses, so a batch split across processes or micro-batches gives the
same gradient as one big batch (2-process training matches single-process).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fgalign.models.masks import gather_last, masked_mean, masked_sum

TOKEN_LOSSES = ("mean-bt", "edit-bt", "token-bce", "mistake-bce")


def prefix_means(r: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Running mean of r over response tokens: S_t = mean(r_1..r_t), 0 outside the response. (B, T) -> (B, T).

    This is the token RM's score of every prefix y_<=t, so S at the last response token equals the
    sequence score, and S_t - S_{t-1} telescopes to it (potential-based shaping for PPO).
    """
    m = response_mask.to(r.dtype)
    running_sum = torch.cumsum(r * m, dim=-1)  # (B, T)
    running_count = torch.cumsum(m, dim=-1).clamp(min=1)  # (B, T)
    return running_sum / running_count * m


def bradley_terry(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """-log sigma(better - worse), per pair: (B,), (B,) -> (B,)."""
    return -F.logsigmoid(better - worse)


def mean_bt(r_better, mask_better, r_worse, mask_worse) -> torch.Tensor:
    """The paper's loss: BT on the mean token reward of each response. -> (B,)"""
    return bradley_terry(masked_mean(r_better, mask_better, dim=-1), masked_mean(r_worse, mask_worse, dim=-1))


def edit_bt(r_better, labels_better, r_worse, labels_worse) -> torch.Tensor:
    """BT on the sums over edited tokens only (labels != 0); kept tokens get no gradient. -> (B,)"""
    edited_better = (labels_better != 0).to(r_better.dtype)
    edited_worse = (labels_worse != 0).to(r_worse.dtype)
    return bradley_terry(masked_sum(r_better, edited_better), masked_sum(r_worse, edited_worse))


def token_bce(r: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logistic loss on the +-1 labels, 0-labels ignored; mean over a row's labelled tokens. -> (B,)

    softplus(-y r) = -log sigma(y r): pushes r up on inserted tokens, down on deleted/replaced ones.
    """
    labelled = (labels != 0).to(r.dtype)
    return masked_mean(F.softplus(-labels.to(r.dtype) * r), labelled, dim=-1)


def kept_square(r: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (sum of r_t^2 over kept response tokens, their count). -> (B,), (B,)"""
    kept = response_mask.to(r.dtype) * (labels == 0).to(r.dtype)
    return masked_sum(r.square(), kept), kept.sum(-1)


def zero_anchor(r_better, labels_better, mask_better, r_worse, labels_worse, mask_worse) -> torch.Tensor:
    """Mean r_t^2 over the kept (0-label) tokens of both responses of each pair. -> (B,)

    Pins kept tokens at 0 so that rewards sit on the edits and a response's total reward has no
    length term (DESIGN §6: without it the token RM paid the policy per token).
    """
    sq_b, n_b = kept_square(r_better, labels_better, mask_better)
    sq_w, n_w = kept_square(r_worse, labels_worse, mask_worse)
    return (sq_b + sq_w) / (n_b + n_w).clamp(min=1)


def token_rm_loss(kind: str, anchor: float, r_better, labels_better, mask_better,
                  r_worse, labels_worse, mask_worse) -> torch.Tensor:
    """The token RM's training loss on (edited = better, original = worse) pairs; a scalar.

    All six tensors are (B, T) over the full sequences (prompt + response + padding); `labels_*` are 0
    outside the response, `mask_*` are the response masks.
    """
    if kind == "mean-bt":
        per_pair = mean_bt(r_better, mask_better, r_worse, mask_worse)
    elif kind == "edit-bt":
        per_pair = edit_bt(r_better, labels_better, r_worse, labels_worse)
    elif kind in ("token-bce", "mistake-bce"):
        if kind == "mistake-bce":
            # Inserted tokens are correct text like the kept ones, and from its context the RM cannot tell
            # them apart: pushing one up while anchoring the other at 0 asks the impossible (measured: worse
            # on every metric). So every correct token is anchored at 0 and only mistakes are pushed (down).
            labels_better, labels_worse = labels_better.clamp(max=0), labels_worse.clamp(max=0)
        # Both responses' labelled tokens count; each pair weighs the same whatever its length.
        r = torch.cat([r_better, r_worse], dim=-1)  # (B, 2T)
        labels = torch.cat([labels_better, labels_worse], dim=-1)  # (B, 2T)
        per_pair = token_bce(r, labels)
    else:
        raise ValueError(f"unknown token loss '{kind}': expected one of {TOKEN_LOSSES}")
    if anchor:
        per_pair = per_pair + anchor * zero_anchor(r_better, labels_better, mask_better,
                                                   r_worse, labels_worse, mask_worse)
    return per_pair.mean()


def sequence_rm_loss(r_better, last_better, r_worse, last_worse) -> torch.Tensor:
    """The sequence RM's loss: BT on the head read at each response's last token; a scalar."""
    return bradley_terry(gather_last(r_better, last_better), gather_last(r_worse, last_worse)).mean()
