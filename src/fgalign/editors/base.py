"""The Editor protocol and the minimality check shared by every editor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rapidfuzz.distance import Levenshtein


class Editor(Protocol):
    """Something that minimally edits the rejected response of a preference pair to make it better."""

    name: str

    def edit(self, prompt: str, rejected: str, chosen: str | None = None) -> str:
        """Return the whole revised response (identical to `rejected` when nothing needs fixing)."""


def edit_ratio(original: str, edited: str) -> float:
    """Normalized character edit distance in [0, 1] (0: identical)."""
    return Levenshtein.normalized_distance(original, edited)


@dataclass
class EditVerdict:
    """Outcome of checking one edit: kept, or dropped as a no-op / over-edit."""

    status: str  # "kept" | "noop" | "overedit"
    ratio: float


def check_edit(original: str, edited: str, max_ratio: float) -> EditVerdict:
    """The minimality check: a no-op edit carries no labels; an edit beyond `max_ratio` is a rewrite."""
    ratio = edit_ratio(original, edited)
    if edited == original:
        return EditVerdict("noop", 0.0)
    if ratio > max_ratio:
        return EditVerdict("overedit", ratio)
    return EditVerdict("kept", ratio)
