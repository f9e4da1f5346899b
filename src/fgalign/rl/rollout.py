"""Rollouts: sample responses with `generate`, then score their tokens with policy, reference and value.

Layout: a batch is `[left-padded prompt (B, P) | response (B, T)]`. The response mask and last index are
computed once, here, from the generated ids (the response ends at its first EOS, EOS included) and are
carried explicitly from then on; nothing downstream looks at pad ids. Position ids are explicit, so the
logits of a prompt do not depend on how much left padding its batch needed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from fgalign.models.generate import SamplingConfig
from fgalign.rl.ppo import entropy_from_logits, logprobs_from_logits


# One set of sampling settings for PPO rollouts and for text sampling (pairs, evaluation): the same knobs,
# so a policy is evaluated with exactly the settings it was trained with.
SamplingSettings = SamplingConfig


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

    def prompt_lists(self) -> list[list[int]]:
        return [row[m].tolist() for row, m in zip(self.prompt_ids, self.prompt_mask)]

    def response_lists(self) -> list[list[int]]:
        """Response ids per row, EOS included when generated."""
        return [row[: int(n) + 1].tolist() for row, n in zip(self.response_ids, self.last_index)]


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


@torch.no_grad()
def generate(model, prompts: list[list[int]], eos_id: int, pad_id: int, settings: SamplingSettings,
             micro_batch: int = 64) -> Rollout:
    """Sample one response per prompt (KV cache, global torch RNG) and build its masks."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    # A fresh GenerationConfig: the model's saved defaults (top_k=50, penalties, …) must not leak in.
    gen_config = GenerationConfig(do_sample=True, temperature=settings.temperature, top_k=settings.top_k,
                                  top_p=settings.top_p, max_new_tokens=settings.max_new_tokens, min_new_tokens=0,
                                  eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True)
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    P = prompt_ids.shape[1]
    chunks = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), micro_batch):
        ids, mask = prompt_ids[start:start + micro_batch], prompt_mask[start:start + micro_batch]
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.long().to(device),
                             generation_config=gen_config)
        chunks.append(out[:, P:].cpu())
    model.train(was_training)
    T = max(c.shape[1] for c in chunks)
    response_ids = torch.cat([torch.nn.functional.pad(c, (0, T - c.shape[1]), value=pad_id) for c in chunks])
    response_mask, last_index, truncated = response_mask_from_ids(response_ids, eos_id)
    # Nothing after the longest response matters; trim so every later forward pass is shorter.
    T = int(last_index.max()) + 1
    return Rollout(prompt_ids, prompt_mask, response_ids[:, :T], response_mask[:, :T], last_index, truncated)


def policy_logprobs(model, rollout: Rollout, temperature: float = 1.0,
                    with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """log π(y_t | x, y_<t) on response tokens (0 outside), and the entropy there if asked.  # (B, T)

    Runs with gradients when the caller has them enabled (the PPO update uses it too).
    """
    T = rollout.response_ids.shape[1]
    # Only the last T + 1 positions need the LM head: position P-1+t predicts response token t.
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   position_ids=rollout.position_ids, use_cache=False, logits_to_keep=T + 1).logits
    logits = logits[:, :-1] / temperature  # (B, T, V)
    mask = rollout.response_mask
    logprobs = torch.where(mask, logprobs_from_logits(logits, rollout.response_ids), 0.0)
    entropy = torch.where(mask, entropy_from_logits(logits), 0.0) if with_entropy else None
    return logprobs, entropy


def values_of(value_model, rollout: Rollout) -> Tensor:
    """V(x, y_<t) for each response token t (0 outside the response).  # (B, T)"""
    P = rollout.prompt_ids.shape[1]
    values = value_model(rollout.input_ids, rollout.attention_mask, rollout.position_ids)[:, P - 1:-1]
    return torch.where(rollout.response_mask, values, 0.0)


@torch.no_grad()
def in_micro_batches(fn, rollout: Rollout, micro_batch: int) -> Tensor:
    """Apply `fn(rollout_chunk) -> (b, T)` in chunks of rows and concatenate (bounded memory)."""
    return torch.cat([fn(rollout.select(slice(i, i + micro_batch))) for i in range(0, len(rollout), micro_batch)])
