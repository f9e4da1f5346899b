"""What the page shows while the annotator types: the word-level diff and the token labels of the edit.

Both come from the alignment code of `fgalign label` / `train-rm` (labels/align.py, labels/project.py), so
what the annotator sees marked is what the reward model is taught:
- the diff is `char_labels` cut into runs: −1 characters of the original (deleted/replaced, struck through),
  +1 characters of the edit (inserted, highlighted);
- the token labels are `label_pair` with the tokenizer and label mode given at `init` (train-rm's
  defaults); without a tokenizer, the words of `char_labels` with their combined label.
"""
from __future__ import annotations

from typing import Any

from fgalign.labels.align import char_labels, words
from fgalign.labels.project import combine, label_pair


def runs(text: str, labels: list[int]) -> list[list]:
    """[[piece, label], ...]: `text` cut where the per-character label changes (the end label becomes an
    empty-text run, so an omission at the end still shows)."""
    out: list[list] = []
    for ch, lab in zip(text, labels):
        if out and out[-1][1] == lab:
            out[-1][0] += ch
        else:
            out.append([ch, lab])
    if len(labels) > len(text) and labels[len(text)] != 0:
        out.append(["", labels[len(text)]])
    return out


def word_labels(text: str, labels: list[int]) -> list[list]:
    """[[word, label], ...] from character labels, plus the end label as "⏎end"."""
    out = [[text[s:e], combine(labels[s:e])] for s, e in words(text)]
    return out + [["⏎end", labels[len(text)]]]


def token_view(tokenizer: Any, ids: list[int], labels: list[int]) -> list[list]:
    """[[token text, label], ...]; special tokens (the EOS that ends every response) show by name."""
    special = set(tokenizer.all_special_ids)
    return [[tokenizer.convert_ids_to_tokens(i) if i in special else tokenizer.decode([i]), lab]
            for i, lab in zip(ids, labels)]


def diff(original: str, edited: str, tokenizer: Any = None, mode: str = "tokens") -> dict:
    """The diff runs of both sides and the labels per token (or per word without a tokenizer)."""
    original_chars, edited_chars = char_labels(original, edited)
    view = {"original": runs(original, original_chars), "edited": runs(edited, edited_chars)}
    if tokenizer is None:
        view.update(unit="word", original_tokens=word_labels(original, original_chars),
                    edited_tokens=word_labels(edited, edited_chars))
    else:
        lab = label_pair(tokenizer, "", original, edited, mode=mode)
        view.update(unit="token", original_tokens=token_view(tokenizer, lab["rejected_ids"], lab["rejected_labels"]),
                    edited_tokens=token_view(tokenizer, lab["edited_ids"], lab["edited_labels"]))
    return view


def rejected_token_labels(original: str, edited: str, tokenizer: Any = None, mode: str = "tokens") -> list[int]:
    """The labels of the original's tokens (words without a tokenizer): what agreement is computed on."""
    if tokenizer is None:
        original_chars, _ = char_labels(original, edited)
        return [lab for _, lab in word_labels(original, original_chars)]
    return label_pair(tokenizer, "", original, edited, mode=mode)["rejected_labels"]
