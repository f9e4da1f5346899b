"""What every sampler takes and gives: `SamplingConfig` in, a `Rollout` out.

Layout: a batch is `[left-padded prompt (B, P) | response (B, T)]`. The response mask and last index are
computed once, here, from the generated ids (the response ends at its first EOS, EOS included) and are
carried explicitly from then on; nothing downstream looks at pad ids. Position ids are explicit, so the
logits of a prompt do not depend on how much left padding its batch needed.

The transformers sampler is `fgalign.sampling.hf`; another engine (vLLM) goes beside it and fills the same
`Rollout`, so the trainer and the evaluators never see which one sampled.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from fgalign.errors import InputError


@dataclass
class SamplingConfig:
    """How responses are sampled. One set of knobs for PPO rollouts, pairs and evaluation, so a policy is
    evaluated with exactly the settings it was trained with."""

    max_new_tokens: int = 32
    """Longest response in tokens (EOS included); longer ones are cut."""
    temperature: float = 1.0
    """Softmax temperature; 1.0 samples from the policy itself."""
    top_k: int = 0
    """Keep only the k most likely tokens (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off)."""
    batch_size: int = 64
    """Prompts per generate call."""

    def check(self, prefix: str = "--") -> None:
        """Values generate() would crash on (or loop forever with), refused with the option's name."""
        for name, low in (("max_new_tokens", 1), ("batch_size", 1), ("top_k", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"expected an integer >= {low}, got {value!r}", field=prefix + name.replace("_", "-"))
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise InputError(f"expected a number > 0, got {self.temperature!r}", field=f"{prefix}temperature")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise InputError(f"expected a number in (0, 1], got {self.top_p!r}", field=f"{prefix}top-p")


@dataclass
class Rollout:
    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P) bool
    response_ids: Tensor  # (B, T)
    response_mask: Tensor  # (B, T) bool: tokens up to and including the first EOS
    last_index: Tensor  # (B,) index of the last response token (EOS, or the cut-off token)
    truncated: Tensor  # (B,) bool: hit max_new_tokens without EOS

    @property
    def input_ids(self) -> Tensor:  # (B, P + T)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # (B, P + T)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1).long()

    @property
    def position_ids(self) -> Tensor:  # (B, P + T)
        return position_ids_from_mask(self.attention_mask)

    def select(self, index: Tensor | slice) -> "Rollout":
        return Rollout(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device) -> "Rollout":
        return Rollout(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    # Both copy to the host once and cut rows there: row by row on CUDA tensors, each `.tolist()`/`int()` was a
    # device sync (3 x B per PPO iteration).
    def prompt_lists(self) -> list[list[int]]:
        ids, mask = self.prompt_ids.tolist(), self.prompt_mask.tolist()
        return [[t for t, m in zip(row, keep) if m] for row, keep in zip(ids, mask)]

    def response_lists(self) -> list[list[int]]:
        """Response ids per row, EOS included when generated."""
        return [row[: n + 1] for row, n in zip(self.response_ids.tolist(), self.last_index.tolist())]


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, … over attended tokens; left padding gets 0 (it is never attended).  # (B, L)"""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists into ids (B, P) and a bool mask (B, P)."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = True
    return ids, mask


def response_mask_from_ids(response_ids: Tensor, eos_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(response_mask (B, T), last_index (B,), truncated (B,)) from freshly generated ids.

    The response ends at its first EOS. Whatever `generate` wrote after it (pad, or EOS again when the
    tokenizer's pad equals EOS) is outside the mask, so pad == EOS needs no special case.
    """
    is_eos = response_ids == eos_id  # (B, T)
    truncated = ~is_eos.any(dim=1)  # (B,)
    T = response_ids.shape[1]
    first_eos = torch.where(truncated, T - 1, is_eos.long().argmax(dim=1))  # (B,)
    response_mask = torch.arange(T, device=response_ids.device)[None, :] <= first_eos[:, None]
    return response_mask, first_eos, truncated
