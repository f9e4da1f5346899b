"""Scoring a sampled `Rollout` on its response tokens: log-probs (and entropy) under a policy, values.

The rollout's masks are explicit (`fgalign.sampling.rollout`); every function here keeps 0 outside them.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fgalign.rl.ppo import entropy_from_logp
from fgalign.sampling.rollout import Rollout


def policy_logprobs(model, rollout: Rollout, temperature: float = 1.0, with_entropy: bool = False,
                    entropy_grad: bool = True) -> tuple[Tensor, Tensor | None]:
    """log π(y_t | x, y_<t) on response tokens (0 outside), and the entropy there if asked.  # (B, T)

    Runs with gradients when the caller has them enabled (the PPO update uses it too). `entropy_grad=False`
    computes the entropy without a graph: a logged statistic needs none (the update without an entropy bonus).
    """
    T = rollout.response_ids.shape[1]
    # Only the last T + 1 positions need the LM head: position P-1+t predicts response token t.
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   position_ids=rollout.position_ids, use_cache=False, logits_to_keep=T + 1).logits
    # fp32 before the temperature: dividing bf16 logits would round them to bf16's 8-bit mantissa first.
    logits = logits[:, :-1].float() / temperature  # (B, T, V)
    mask = rollout.response_mask
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V): one log_softmax for log-probs and entropy
    logprobs = torch.where(mask, logp.gather(-1, rollout.response_ids[..., None]).squeeze(-1), 0.0)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = torch.where(mask, entropy_from_logp(logp if entropy_grad else logp.detach()), 0.0)
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
