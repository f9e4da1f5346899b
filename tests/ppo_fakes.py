"""Test doubles for the PPO tests: an EOS-prone tiny policy, a table-driven reward model, a small task.

Imported by tests/test_rollout.py and tests/test_ppo_trainer.py, and by the scripts those tests launch
in subprocesses (resume after SIGKILL, two processes under accelerate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PROMPTS = ["List 3 fruits:", "List 4 animals:", "List 2 colors:", "The movie was", "I hated the",
           "List 3 colors:", "The music was", "List 2 fruits:"]


def make_eos_prone(model, eos_id: int, boost: float = 3.0):
    """Shift the final layer norm's bias along the EOS output embedding: p(EOS) rises to ~e^boost / V,
    so a random tiny policy ends some responses and runs others into the length limit."""
    w = model.get_output_embeddings().weight[eos_id].detach()
    with torch.no_grad():
        model.transformer.ln_f.bias += boost * w / w.pow(2).sum()
    return model


def eos_prone_policy_dir(src: Path, dst: Path, boost: float = 3.0) -> Path:
    from fgalign.models.policy import load_causal_lm, load_tokenizer

    tok = load_tokenizer(src)
    model = make_eos_prone(load_causal_lm(src), tok.eos_token_id, boost)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@dataclass
class FakeRewardOutput:
    token_rewards: torch.Tensor  # (B, T)
    prefix_scores: torch.Tensor  # (B, T)
    sequence_score: torch.Tensor  # (B,)


class TableRewardModel:
    """A token RM with r_t = table[token id]; S_t = running mean; sequence score = mean r_t.

    With `eos_only=True` it behaves as a sequence RM: token rewards are zero except its score at the last
    token (the shape `fgalign.models.reward.RewardOutput` promises for a sequence RM).
    """

    def __init__(self, vocab_size: int, seed: int = 0, eos_only: bool = False):
        self.table = torch.randn(vocab_size, generator=torch.Generator().manual_seed(seed))
        self.level = "sequence" if eos_only else "token"
        self.eos_only = eos_only
        self.calls = 0

    def score_responses(self, prompt_ids, response_ids, tokenizer=None, prompts=None) -> FakeRewardOutput:
        self.calls += 1
        T = max(map(len, response_ids))
        r = torch.zeros(len(response_ids), T)
        mask = torch.zeros(len(response_ids), T, dtype=torch.bool)
        for i, ids in enumerate(response_ids):
            r[i, : len(ids)] = self.table[torch.tensor(ids)]
            mask[i, : len(ids)] = True
        prefix = torch.where(mask, r.cumsum(1) / torch.arange(1, T + 1), 0.0)
        seq = r.sum(1) / mask.sum(1)
        if self.eos_only:
            last = mask.sum(1) - 1
            r = torch.zeros_like(r).scatter(1, last[:, None], seq[:, None])
        return FakeRewardOutput(r, prefix, seq)


class FakeTask:
    """Enough of the Task protocol for PPO: prompts (seeded) and a score."""

    name = "fake"

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
        return [PROMPTS[i] for i in torch.randint(len(PROMPTS), (n,), generator=g).tolist()]

    def sft_examples(self, n, seed):
        return [(p, " a, b.") for p in self.prompts("train", n, seed)]

    def score(self, prompt: str, response: str) -> float:
        return -abs(len(response.split()) - 3)

    def minimal_edit(self, prompt: str, response: str) -> str:
        return response
