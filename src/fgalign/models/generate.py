"""Text-level sampling from a causal LM (for preference pairs and evaluation).

PPO's rollout keeps ids, masks and log-probs (`fgalign.rl.rollout`); this is the plain "prompts in, strings out"
path, with the same sampling settings and the same tokenization rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fgalign.data.tokenize import encode_prompt


@dataclass
class SamplingConfig:
    """How responses are sampled."""

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


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: list[str], cfg: SamplingConfig, seed: int,
                     greedy: bool = False) -> list[str]:
    """One sampled response per prompt, decoded without the EOS, in the order of `prompts`.

    Seeded per call (a torch.Generator is not accepted by `generate`, so the global RNG is seeded here).
    """
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    model.eval()
    out: list[str] = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = [encode_prompt(tokenizer, p) for p in prompts[start:start + cfg.batch_size]]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, p in enumerate(chunk):  # left padding: every prompt ends at the same column
            ids[i, width - len(p):] = torch.tensor(p)
            attention[i, width - len(p):] = 1
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=not greedy,
            temperature=cfg.temperature if not greedy else None, top_k=cfg.top_k if not greedy else None,
            top_p=cfg.top_p if not greedy else None, max_new_tokens=cfg.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id)]
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
