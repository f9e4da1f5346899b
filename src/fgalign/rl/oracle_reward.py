"""The task's oracle as a reward model (`fgalign ppo --rm task`): what PPO reaches when the RM is perfect.

A diagnostic for "optimiser or reward model?" that best-of-n alone cannot answer: best-of-n says what an RM
can buy at a KL; PPO on the oracle's own reward says what PPO can buy at that KL when the reward is right.
If PPO on the oracle falls short of the oracle's best-of-n, the optimiser is a bottleneck too.

Two levels, as for learned RMs:
- sequence: the gold `task.score(prompt, response)` at the last response token;
- token: what a perfect `mistake-bce` token RM would learn: −1 on each response token that the oracle's
  minimal edit deletes or replaces (character labels, `fgalign.labels.align.char_labels`, projected onto the
  policy's own sampled tokens; a missing item marks the token where it should have been), 0 elsewhere. Its
  sequence score is the gold score too, so `--reward sequence` on it equals the sequence oracle.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from fgalign.labels.align import char_labels
from fgalign.labels.project import combine
from fgalign.models.projection import char_ends
from fgalign.models.reward import RewardOutput


class TaskRewardModel:
    """Rewards from the task's `score` and `minimal_edit` (the built-in worlds' oracle)."""

    def __init__(self, task: Any, level: str = "token"):
        if not callable(getattr(task, "score", None)) or (level == "token" and not callable(
                getattr(task, "minimal_edit", None))):
            raise ValueError(f"task '{getattr(task, 'name', task)}' has no score/minimal_edit to reward with")
        self.task, self.level = task, level

    def token_labels(self, tokenizer: Any, prompt: str, response: Sequence[int]) -> list[int]:
        """−1/0 per sampled token (EOS included) from the oracle's minimal edit of the decoded text."""
        has_eos = len(response) > 0 and response[-1] == tokenizer.eos_token_id
        body = list(response[:-1]) if has_eos else list(response)
        text = tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        labels, _ = char_labels(text, self.task.minimal_edit(prompt, text))  # len(text) + 1: the end label last
        out, start = [], 0
        for end in char_ends(tokenizer, body):
            out.append(combine(labels[start:end]))
            start = max(start, end)
        out += [0] if has_eos else []
        # Content missing at the very end (the end label): the last token emitted, where it should have been.
        if out:
            out[-1] = combine([out[-1], labels[len(text)]])
        return out

    @torch.no_grad()
    def score_responses(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                        tokenizer: Any, micro_batch: int = 32, prompts: Sequence[str] | None = None) -> RewardOutput:
        """The oracle's rewards; `prompts` (the task's texts) spare decoding a chat-templated prompt."""
        B, T = len(response_ids), max(len(r) for r in response_ids)
        token_rewards, prefix = torch.zeros(B, T), torch.zeros(B, T)
        scores = torch.zeros(B)
        for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            prompt = prompts[b] if prompts is not None else tokenizer.decode(list(p), skip_special_tokens=True)
            text = tokenizer.decode(list(r), skip_special_tokens=True)
            scores[b] = float(self.task.score(prompt, text))
            if self.level == "token":
                token_rewards[b, : len(r)] = torch.tensor(self.token_labels(tokenizer, prompt, r), dtype=torch.float)
                prefix[b, : len(r)] = token_rewards[b, : len(r)].cumsum(0)
            else:
                token_rewards[b, len(r) - 1] = prefix[b, len(r) - 1] = scores[b]
        return RewardOutput(token_rewards, prefix, scores)
