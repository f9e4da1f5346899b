"""How a (prompt, response) pair becomes token ids — one rule used by every stage.

Prompt and response are tokenized separately and concatenated, so the response's tokens never depend on
the prompt (no BPE merge across the boundary) and the response mask is exact. The EOS token belongs to the
response: it takes a token reward and carries the sequence score.
"""
from __future__ import annotations

from typing import Any

from fgalign.errors import InputError


def check_tokenizer(tokenizer: Any) -> None:
    """Refuse tokenizers we cannot mask correctly: no EOS, or a pad token equal to EOS."""
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token; responses could never end", field="tokenizer")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Masks are explicit everywhere, but a pad equal to EOS makes saved batches ambiguous: add a pad.
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids (with the tokenizer's BOS if it uses one)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def encode_response(tokenizer: Any, response: str, add_eos: bool = True) -> list[int]:
    """Response ids, ending with EOS unless `add_eos` is False."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if add_eos else ids


def encode_pair(tokenizer: Any, prompt: str, response: str, add_eos: bool = True) -> tuple[list[int], list[int]]:
    return encode_prompt(tokenizer, prompt), encode_response(tokenizer, response, add_eos)


def token_spans(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` (no special tokens) and the character span each one covers.

    The one place that asks a tokenizer for offsets: labels are projected through them, rewards move between
    two tokenizations through them, and the heatmap cuts its text pieces with them.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"{type(tokenizer).__name__} is a slow tokenizer; character offsets need a fast "
                         "(Rust `tokenizers`) one — load it with use_fast=True or convert it", field="tokenizer")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]
