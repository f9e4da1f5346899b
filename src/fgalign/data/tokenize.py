"""How a (prompt, response) pair becomes token ids — one rule used by every stage.

Prompt and response are tokenized separately and concatenated, so the response's tokens never depend on
the prompt (no BPE merge across the boundary) and the response mask is exact. The EOS token belongs to the
response: it takes a token reward and carries the sequence score.
"""
from __future__ import annotations

from typing import Any

from fgalign.errors import InputError


def check_tokenizer(tokenizer: Any) -> None:
    """Refuse tokenizers we cannot mask correctly (no EOS); give one whose pad is EOS (or missing) its own pad."""
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token; responses could never end", field="tokenizer")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Masks are explicit everywhere, but a pad equal to EOS makes saved batches ambiguous. A spare special
        # token the model already embeds pads best (Llama-style tokenizers: <unk>, SmolLM2's <|endoftext|>);
        # a new token would grow the vocabulary past the model's embedding matrix, and only `sft` resizes it.
        unk = tokenizer.unk_token_id
        if unk is not None and unk not in (tokenizer.eos_token_id, tokenizer.bos_token_id):
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def uses_chat_template(tokenizer: Any) -> bool:
    """Whether prompts reach the model through its chat template: whenever its tokenizer has one."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, prompt: str | list[dict]) -> str:
    """The prompt as the model sees it: a plain string becomes one user message and, like a message list, goes
    through the tokenizer's chat template with the generation prompt; without a template a string stays as is.

    Instruct models are trained on their template; a task's raw prompt text would reach them out of
    distribution (a user asking SmolLM2-Instruct a question gets the template, so its policy must too)."""
    if not uses_chat_template(tokenizer):
        if not isinstance(prompt, str):
            raise InputError("a chat-message prompt needs a tokenizer with a chat template; this tokenizer has "
                             "none — convert the data to plain strings or pass a chat model", field="prompt")
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, prompt: str | list[dict]) -> list[int]:
    """Prompt ids: through the chat template when the tokenizer has one (`chat_prompt`), else the text with the
    tokenizer's BOS if it uses one (a template writes its own)."""
    templated = uses_chat_template(tokenizer)
    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    if not templated and tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
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
