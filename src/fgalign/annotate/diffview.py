"""What the page shows while the annotator types: the word-level diff and the token labels of the edit.

Both come from the alignment code of `fgalign label` / `train-rm` (labels/align.py, labels/project.py), so
what the annotator sees marked is what the reward model is taught:
- the diff is `char_labels` cut into runs: −1 characters of the original (deleted/replaced, struck through),
  +1 characters of the edit (inserted, highlighted);
- the token labels are `label_pair` with the tokenizer and label mode given at `init` (the same call
  train-rm makes); without a tokenizer, the words of `char_labels` with their combined label.

Token labels are shown as chips. A chip is one token, except where a byte-level tokenizer splits one
character (CJK, emoji) over several tokens that cannot be drawn alone: those tokens share one chip that
shows the character and keeps every token's label (`labels`), so the chips still list train-rm's labels
token by token. Whitespace-only tokens show a visible mark (· space, ↵ newline, → tab).
"""
from __future__ import annotations

from typing import Any

from fgalign.data.tokenize import token_spans
from fgalign.labels.align import char_labels, words
from fgalign.labels import DEFAULT_LABEL_MODE
from fgalign.labels.project import combine, label_pair

WHITESPACE_MARKS = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})
REPLACEMENT = "\ufffd"


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


def chip(text: str, labels: list[int], title: str | None = None, special: bool = False) -> dict:
    """One chip: what it shows (`t`), its colour label (`l`), the label of every token it stands for, and
    whether it is whitespace only (`ws`, shown with marks) or a special token (`sp`)."""
    ws = not special and text != "" and text.strip() == ""
    shown = text.translate(WHITESPACE_MARKS) if ws else (text or "∅")
    return {"t": shown, "l": combine(labels), "labels": list(labels), "ws": ws, "sp": special,
            "title": title if title is not None else repr(text)}


def word_chips(text: str, labels: list[int]) -> list[dict]:
    """One chip per word of `char_labels`, plus the end label as "⏎end"."""
    out = [chip(text[s:e], [combine(labels[s:e])]) for s, e in words(text)]
    return out + [chip("⏎end", [labels[len(text)]], title="end of the response", special=True)]


def token_chips(tokenizer: Any, text: str, ids: list[int], labels: list[int]) -> list[dict]:
    """Chips for the response tokens `ids` of `text` (ending with the end id) and their labels.

    A token whose text alone is not drawable (it holds part of a character: decoding it gives U+FFFD)
    joins the next ones that overlap the same characters; their chip shows those characters of `text`.
    """
    special = set(tokenizer.all_special_ids)
    span_ids, spans = token_spans(tokenizer, text)
    n_text = len(span_ids)
    if span_ids != list(ids[:n_text]):  # not the tokenization the labels came from: one chip per token
        spans = [None] * len(ids)
    out: list[dict] = []
    group: dict | None = None  # the open multi-token chip: its first token index, characters, labels
    for k, (tid, lab) in enumerate(zip(ids, labels)):
        if tid in special and k >= n_text:
            group = None
            name = tokenizer.convert_ids_to_tokens(tid)
            out.append(chip(name, [lab], title=f"{name}: ends the response", special=True))
            continue
        piece = tokenizer.decode([tid])
        span = spans[k] if k < len(spans) else None
        partial = span is not None and REPLACEMENT in piece and REPLACEMENT not in text[span[0]:span[1]]
        if partial and group is not None and span[0] < group["end"]:
            group["end"] = max(group["end"], span[1])
            group["labels"].append(lab)
            out[-1] = chip(text[group["start"]:group["end"]], group["labels"],
                           title=f"{len(group['labels'])} tokens of one character")
            continue
        if partial:
            group = {"start": span[0], "end": span[1], "labels": [lab]}
            out.append(chip(text[span[0]:span[1]], [lab], title="part of a character"))
        else:
            group = None
            out.append(chip(piece, [lab]))
    return out


def diff(original: str, edited: str, tokenizer: Any = None, mode: str = DEFAULT_LABEL_MODE) -> dict:
    """The diff runs of both sides and the chips per token (or per word without a tokenizer)."""
    original_chars, edited_chars = char_labels(original, edited)
    view = {"original": runs(original, original_chars), "edited": runs(edited, edited_chars), "mode": mode}
    if tokenizer is None:
        view.update(unit="word", original_tokens=word_chips(original, original_chars),
                    edited_tokens=word_chips(edited, edited_chars))
    else:
        lab = label_pair(tokenizer, "", original, edited, mode=mode)
        view.update(unit="token",
                    original_tokens=token_chips(tokenizer, original, lab["rejected_ids"], lab["rejected_labels"]),
                    edited_tokens=token_chips(tokenizer, edited, lab["edited_ids"], lab["edited_labels"]))
    return view


def rejected_token_labels(original: str, edited: str, tokenizer: Any = None, mode: str = DEFAULT_LABEL_MODE
                          ) -> list[int]:
    """The labels of the original's tokens (words without a tokenizer): what agreement is computed on."""
    if tokenizer is None:
        original_chars, _ = char_labels(original, edited)
        return [c["l"] for c in word_chips(original, original_chars)]
    return label_pair(tokenizer, "", original, edited, mode=mode)["rejected_labels"]
