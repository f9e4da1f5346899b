"""Text-level sampling from a causal LM (for preference pairs and evaluation).

PPO's rollout keeps ids, masks and log-probs (`fgalign.rl.rollout`); this is the plain "prompts in, strings out"
path on top of it, with the same sampling settings and the same tokenization rule.
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


def sample_responses(model, tokenizer, prompts: list[str], cfg: SamplingConfig, seed: int) -> list[str]:
    """One sampled response per prompt, decoded without the EOS, in the order of `prompts`.

    The same sampler as PPO's rollouts (`fgalign.rl.rollout.generate`: left padding, a fresh generation config
    so no saved defaults leak in), so pairs, evaluation and training sample alike. Seeded per call (`generate`
    takes no torch.Generator, so the global RNG is seeded here).
    """
    from fgalign.rl.rollout import generate

    torch.manual_seed(seed)
    rollout = generate(model, [encode_prompt(tokenizer, p) for p in prompts], tokenizer.eos_token_id,
                       tokenizer.pad_token_id, cfg, micro_batch=cfg.batch_size)
    responses = [ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids for ids in rollout.response_lists()]
    return tokenizer.batch_decode(responses, skip_special_tokens=True)
