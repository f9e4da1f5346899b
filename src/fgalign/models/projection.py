"""Moving per-token values between two tokenizations of the same text, through character offsets.

Used when the policy and the reward model tokenize differently (e.g. GPT-2 BPE policy, WordPiece RM):
the RM scores the decoded text with its own tokens and its rewards are projected onto the caller's.

The rule (exact, total-preserving): each RM token's value goes, whole, to the caller token that
contains the RM token's last character; a caller token receives the sum of those values. Zero-width
RM tokens (its EOS) go to the caller's last response token. So the sum over a response is unchanged.
"""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import torch


def char_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """End offset (exclusive) in `tokenizer.decode(ids)` of each token; special tokens are zero-width.

    Decoding prefixes (not single tokens) keeps multi-byte characters split across byte-level BPE
    tokens intact; the running max keeps ends monotone while such a character is still incomplete.
    """
    ends, best = [], 0
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        best = max(best, len(text.rstrip("\ufffd")))  # an incomplete UTF-8 char decodes to U+FFFD
        ends.append(best)
    return ends


def owner_index(rm_ends: Sequence[int], rm_zero_width: Sequence[bool], caller_ends: Sequence[int]) -> list[int]:
    """For each RM token, the index of the caller token that receives its value.

    The caller token owning character c-1 is the first one whose end is >= c (zero-width caller tokens
    sit after the text token with the same end, so they never steal it).
    """
    last = len(caller_ends) - 1
    owners = []
    for end, zero in zip(rm_ends, rm_zero_width):
        owners.append(last if zero else min(bisect.bisect_left(caller_ends, end), last))
    return owners


def project_sum(values: torch.Tensor, owners: Sequence[int], n_caller: int) -> torch.Tensor:
    """Sum RM-token values into caller tokens: (N_rm,) -> (N_caller,)."""
    out = torch.zeros(n_caller, dtype=values.dtype)
    out.index_add_(0, torch.as_tensor(list(owners), dtype=torch.long), values)
    return out


def project_prefix(prefix: torch.Tensor, owners: Sequence[int], n_caller: int) -> torch.Tensor:
    """Prefix scores on caller tokens: S at caller token i is the RM's prefix score after the last RM
    token owned by a caller token <= i (0 before any). (N_rm,) -> (N_caller,)."""
    out = torch.zeros(n_caller, dtype=prefix.dtype)
    filled = torch.zeros(n_caller, dtype=torch.bool)
    for j, owner in enumerate(owners):  # owners are non-decreasing: the last RM token per owner wins
        out[owner] = prefix[j]
        filled[owner] = True
    for i in range(1, n_caller):  # forward-fill caller tokens that own no RM token
        if not filled[i]:
            out[i] = out[i - 1]
    return out
