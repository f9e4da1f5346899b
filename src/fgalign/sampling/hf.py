"""The transformers sampler: `model.generate` with a KV cache, one response per prompt.

`generate` gives token ids with their masks (a `Rollout`, what PPO consumes); `sample_responses` is the plain
"prompts in, strings out" path on top of it (pairs, evaluation), with the same settings and the same
tokenization rule, so pairs, evaluation and training sample alike.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from fgalign.data.tokenize import encode_prompt
from fgalign.runinfo import progress_bar
from fgalign.sampling.rollout import Rollout, SamplingConfig, left_pad, response_mask_from_ids

# Set by a stage run from the command line (sample, eval): generate() then shows a bar. PPO's and the
# pipeline's inner evaluations leave it unset and print their own lines.
_BAR: list[str] = []


@contextlib.contextmanager
def progress(description: str) -> Iterator[None]:
    """Within this block every generate() call shows a progress bar (with ETA) titled `description`."""
    _BAR.append(description)
    try:
        yield
    finally:
        _BAR.pop()


@torch.no_grad()
def embedded_pad_id(pad_id: int, eos_id: int, vocab: int) -> int:
    """The id that pads. `check_tokenizer` may add a pad token the model has no embedding for (a user's model
    that fgalign's `sft` never resized); EOS then pads instead (masks are explicit, so that is safe)."""
    return pad_id if pad_id < vocab else eos_id


def generate(model, prompts: list[list[int]], eos_id: int, pad_id: int, settings: SamplingConfig,
             micro_batch: int = 64) -> Rollout:
    """Sample one response per prompt (KV cache, global torch RNG) and build its masks."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    pad_id = embedded_pad_id(pad_id, eos_id, model.get_input_embeddings().num_embeddings)
    # A fresh GenerationConfig: the model's saved defaults (top_k=50, penalties, …) must not leak in.
    gen_config = GenerationConfig(do_sample=True, temperature=settings.temperature, top_k=settings.top_k,
                                  top_p=settings.top_p, max_new_tokens=settings.max_new_tokens, min_new_tokens=0,
                                  eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True)
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    P = prompt_ids.shape[1]
    chunks = []
    was_training = model.training
    model.eval()
    bar = progress_bar(_BAR[-1], len(prompts)) if _BAR else contextlib.nullcontext(lambda n=1: None)
    with bar as advance:
        for start in range(0, len(prompts), micro_batch):
            ids, mask = prompt_ids[start:start + micro_batch], prompt_mask[start:start + micro_batch]
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.long().to(device),
                                 generation_config=gen_config)
            chunks.append(out[:, P:].cpu())
            advance(len(ids))
    model.train(was_training)
    T = max(c.shape[1] for c in chunks)
    response_ids = torch.cat([torch.nn.functional.pad(c, (0, T - c.shape[1]), value=pad_id) for c in chunks])
    response_mask, last_index, truncated = response_mask_from_ids(response_ids, eos_id)
    # Nothing after the longest response matters; trim so every later forward pass is shorter.
    T = int(last_index.max()) + 1
    return Rollout(prompt_ids, prompt_mask, response_ids[:, :T], response_mask[:, :T], last_index, truncated)


def sample_responses(model, tokenizer, prompts: list[str], cfg: SamplingConfig, seed: int) -> list[str]:
    """One sampled response per prompt, decoded without the EOS, in the order of `prompts`.

    The same sampler as PPO's rollouts (`generate`: left padding, a fresh generation config so no saved
    defaults leak in). Seeded per call (`generate` takes no torch.Generator, so the global RNG is seeded here).
    """
    torch.manual_seed(seed)
    rollout = generate(model, [encode_prompt(tokenizer, p) for p in prompts], tokenizer.eos_token_id,
                       tokenizer.pad_token_id, cfg, micro_batch=cfg.batch_size)
    responses = [ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids for ids in rollout.response_lists()]
    return tokenizer.batch_decode(responses, skip_special_tokens=True)
