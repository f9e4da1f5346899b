"""Edit records for the reward-model tests, made the paper's way from the default world.

Two demonstrations per prompt, the oracle prefers the higher score, and the rejected one is minimally
edited by the oracle; pairs whose edit is a no-op are dropped.
"""
from __future__ import annotations

import random


def make_edit_records(n: int, seed: int = 0) -> list[dict]:
    from fgalign.tasks.base import load_task

    task = load_task("default")
    rng = random.Random(seed)
    records = []
    for prompt in task.prompts("train", 20 * n, seed):
        a, b = task.demonstrate(prompt, rng), task.demonstrate(prompt, rng)
        sa, sb = task.score(prompt, a), task.score(prompt, b)
        if sa == sb:
            continue
        chosen, rejected = (a, b) if sa > sb else (b, a)
        edited = task.minimal_edit(prompt, rejected)
        if edited == rejected:
            continue
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "edited": edited,
                        "meta": {"chosen_score": max(sa, sb), "rejected_score": min(sa, sb)}})
        if len(records) == n:
            break
    return records
