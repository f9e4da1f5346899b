"""The preference record and its validation.

A record is TRL's *standard* preference form — `prompt`, `chosen`, `rejected` as strings — plus an optional
`edited` (the annotator's minimal edit of `rejected`) and a free `meta` dict. TRL's *conversational* form
(lists of `{"role", "content"}` messages) is accepted too: responses become text (`render_text`), prompts
go through the tokenizer's chat template when encoded (`data.tokenize.encode_prompt`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fgalign.errors import InputError

Message = dict[str, str]
Text = str | list[Message]
TEXT_FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PreferenceRecord:
    """One preference pair, optionally with a minimal edit of the rejected response."""

    prompt: Text
    """The prompt: a string, or a list of chat messages."""
    chosen: Text
    """The preferred response: a string, or a list with the assistant message(s)."""
    rejected: Text
    """The less-preferred response (the one the annotator edits)."""
    edited: Text | None = None
    """The annotator's minimal edit of `rejected`, or None before the edit stage."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form: scores, judge, editor, seed."""

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.edited is not None:
            d["edited"] = self.edited
        d["meta"] = self.meta
        return d


@dataclass
class ReadStats:
    """What reading a file did besides returning records."""

    read: int = 0
    skipped_noop_edits: int = 0
    skipped_missing_edit: int = 0


def _check_text(value: Any, name: str, where: dict) -> Text:
    if isinstance(value, str):
        # An empty *response* is a real sample (a policy that stops at once); an empty prompt is a broken record.
        if name == "prompt" and not value.strip():
            raise InputError("expected a non-empty string, got an empty one", field=name, **where)
        return value
    if isinstance(value, list):
        if not value:
            raise InputError("expected a non-empty list of messages", field=name, **where)
        for i, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise InputError(f"message {i} must be an object with string 'role' and 'content', got {m!r:.80}",
                                 field=name, **where)
        return value
    raise InputError(f"expected a string (or a list of chat messages), got {type(value).__name__}: {value!r:.80}",
                     field=name, **where)


def validate_record(obj: Any, *, path: str | None = None, line: int | None = None,
                    row: int | None = None) -> PreferenceRecord:
    """Turn one parsed JSON object into a PreferenceRecord, or raise InputError naming what is wrong."""
    where = {"path": path, "line": line, "row": row}
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object with fields {', '.join(TEXT_FIELDS)}, got {type(obj).__name__}",
                         **where)
    for name in TEXT_FIELDS:
        if name not in obj or obj[name] is None:
            raise InputError("missing required field (expected a string)", field=name, **where)
    prompt, chosen, rejected = (_check_text(obj[n], n, where) for n in TEXT_FIELDS)
    edited = obj.get("edited")
    if edited is not None:
        edited = _check_text(edited, "edited", where)
    kinds = {type(x) for x in (prompt, chosen, rejected, edited) if x is not None}
    if len(kinds) > 1:
        raise InputError("mixes plain strings and chat-message lists; use one form for the whole record",
                         field="prompt", **where)
    meta = obj.get("meta") or {}
    if isinstance(meta, str):  # parquet stores meta as a JSON string
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise InputError("expected an object (or its JSON text)", field="meta", **where) from None
    if not isinstance(meta, dict):
        raise InputError(f"expected an object, got {type(meta).__name__}", field="meta", **where)
    return PreferenceRecord(prompt, chosen, rejected, edited, dict(meta))


def response_text(value: Text) -> str:
    """A response as text: a string as is; for messages, the assistant contents joined."""
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in value if m["role"] == "assistant")


def render_text(record: PreferenceRecord, tokenizer: Any = None) -> PreferenceRecord:
    """Return the record with its responses as text; a chat prompt stays a message list.

    `data.tokenize.encode_prompt` renders every prompt, plain or chat, through the tokenizer's chat template:
    rendering it here as well would template it twice. A tokenizer without a template is refused here, with a
    clear error, for conversational records.
    """
    if not record.conversational:
        return record
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InputError("conversational records (lists of messages) need a tokenizer with a chat template; "
                         "this tokenizer has none — convert the data to plain strings or pass a chat model",
                         field="prompt")
    edited = None if record.edited is None else response_text(record.edited)
    return PreferenceRecord(record.prompt, response_text(record.chosen), response_text(record.rejected), edited,
                            dict(record.meta))
