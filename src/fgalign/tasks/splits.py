"""Disjoint, seeded prompt splits shared by the built-in worlds.

A prompt's split is a pure function of its text (a stable hash), so train, valid and test never share a
prompt whatever the seed, the number asked for, or the Python process (no PYTHONHASHSEED dependence).
"""
from __future__ import annotations

import hashlib
import random
from typing import Callable

from fgalign.errors import InputError

SPLITS = ("train", "valid", "test")


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def split_of(prompt: str, valid_pct: int = 10, test_pct: int = 10) -> str:
    """"train", "valid" or "test" for this prompt: 80/10/10 by default, fixed by the prompt's text."""
    bucket = stable_hash(prompt) % 100
    if bucket < valid_pct:
        return "valid"
    if bucket < valid_pct + test_pct:
        return "test"
    return "train"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}': expected one of {list(SPLITS)}", field="split")


def sample_prompts(draw: Callable[[random.Random], str], split: str, n: int, seed: int,
                   distinct: bool = True) -> list[str]:
    """`n` prompts of `split`, drawn by `draw(rng)` and kept when they hash into the split.

    With `distinct`, a prompt is not repeated until the split looks exhausted (a run of misses), so small
    splits still give `n` prompts.
    """
    check_split(split)
    rng = random.Random(f"{split}:{seed}")
    out: list[str] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        prompt = draw(rng)
        if split_of(prompt) != split:
            continue
        if distinct and prompt in seen:
            misses += 1
            distinct = misses < 1000  # the split is (nearly) used up: allow repeats from now on
            continue
        misses = 0
        seen.add(prompt)
        out.append(prompt)
    return out
