"""Project character labels onto any tokenizer's tokens, and label one edit pair.

Two ways to get token labels for an edit pair:
- "tokens": align the two token-id sequences directly (the paper's way; right when the labels are for the
  tokenizer the edit will be scored with);
- "chars":  align words/characters once (`char_labels`) and project them through character offsets, so the
  same edit gives consistent labels under any fast tokenizer (e.g. a BERT reward model next to a GPT policy).
"""
from __future__ import annotations

from typing import Any, Sequence

from fgalign.data.tokenize import encode_response, token_spans
from fgalign.errors import InputError
from fgalign.labels import DEFAULT_LABEL_MODE
from fgalign.labels.align import DELETED, INSERTED, KEPT, char_labels, token_labels

MODES = ("tokens", "chars")


def end_token_id(tokenizer: Any) -> int:
    """The id that ends a response: EOS, or for encoder tokenizers without one (BERT) their [SEP]."""
    for tid in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if tid is not None:
            return tid
    raise InputError("the tokenizer has neither an EOS nor a SEP token; responses could never end",
                     field="tokenizer")


def combine(labels: Sequence[int]) -> int:
    """One label for a group of characters: −1 wins (a token touching a mistake is a mistake), then +1."""
    if DELETED in labels:
        return DELETED
    return INSERTED if INSERTED in labels else KEPT


def project_char_labels(text: str, labels: list[int], tokenizer: Any, add_eos: bool = True
                        ) -> tuple[list[int], list[int]]:
    """Token ids of `text` and one label per token, from per-character labels.

    `labels` has len(text) entries, or len(text) + 1 where the last is the end label (as `char_labels`
    returns); with `add_eos` the end id is appended and takes the end label (0 when there is none).
    A token takes `combine` of the characters its offsets cover. A token with an empty span at position s
    takes the label of one character: the whitespace at s − 1 if there is one (tokenizers that trim offsets,
    like GPT-2's byte-level BPE, leave a whitespace piece empty just after the space it stands for), else
    the character at s, else the last character.
    """
    n = len(text)
    if len(labels) not in (n, n + 1):
        raise ValueError(f"expected {n} or {n + 1} labels for a text of {n} characters, got {len(labels)}")
    end_label = labels[n] if len(labels) == n + 1 else KEPT
    ids, spans = token_spans(tokenizer, text)
    token_labels_ = []
    for start, end in spans:
        if end <= start:
            start = start - 1 if 0 < start <= n and text[start - 1].isspace() else min(start, n - 1)
            end = start + 1
        token_labels_.append(combine(labels[start:end]))
    if add_eos:
        ids.append(end_token_id(tokenizer))
        token_labels_.append(end_label)
    return ids, token_labels_


def label_pair(tokenizer: Any, prompt: str, original: str, edited: str, mode: str = DEFAULT_LABEL_MODE,
               mark_omissions: bool = True) -> dict:
    """Token labels of one edit pair: response tokens only, each side ending with the end id (EOS).

    `prompt` does not change the labels: prompt and response are tokenized separately (data/tokenize.py),
    so response ids never depend on it. It is taken so that callers pass whole records and a future rule
    that needs it keeps this signature.
    """
    del prompt
    if mode == "tokens":
        rejected_ids = encode_response(tokenizer, original, add_eos=False) + [end_token_id(tokenizer)]
        edited_ids = encode_response(tokenizer, edited, add_eos=False) + [end_token_id(tokenizer)]
        rejected_labels, edited_labels = token_labels(rejected_ids, edited_ids, mark_omissions)
    elif mode == "chars":
        original_chars, edited_chars = char_labels(original, edited, mark_omissions)
        rejected_ids, rejected_labels = project_char_labels(original, original_chars, tokenizer)
        edited_ids, edited_labels = project_char_labels(edited, edited_chars, tokenizer)
    else:
        raise InputError(f"unknown label mode '{mode}': expected one of {', '.join(MODES)}", field="mode")
    return {"rejected_ids": rejected_ids, "rejected_labels": rejected_labels,
            "edited_ids": edited_ids, "edited_labels": edited_labels}
