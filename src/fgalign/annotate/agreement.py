"""Progress and agreement for `fgalign annotate stats`.

Agreement is measured where the reward model learns: on the token labels of the rejected response (−1
mistake / 0 kept) that each annotator's edit produces. For every item done by two or more annotators,
each pair of annotators gives Cohen's kappa over those labels and whether the two edits are identical.
Overall and per-annotator kappas pool the label pairs of all their comparisons. A pooled kappa is
dominated by long items (one 2,000-token item can outweigh fifty short ones), so `item_agreement` is
reported beside it: per item, the mean over its annotator pairs of their kappa, and the mean of that over
items. A pair's kappa is undefined when both leave every label at one value (usually 0: nothing to fix);
their labels are then identical, which counts as agreement 1. "Needs a rewrite" verdicts have no labels and
are left out of the kappas.
"""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from fgalign.annotate.db import assignments, items, submissions as submission_rows, users
from fgalign.annotate.diffview import rejected_token_labels
from fgalign.labels import DEFAULT_LABEL_MODE


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's kappa of two equally long label sequences; None when chance agreement is 1 (one label only)."""
    if len(a) != len(b):
        raise ValueError(f"label sequences differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def submissions(conn: Connection) -> list[dict]:
    rows = conn.execute(select(assignments.c.item_id, assignments.c.verdict, assignments.c.edited,
                               assignments.c.swapped, assignments.c.seconds, assignments.c.edit_ratio,
                               users.c.name.label("user"), items.c.chosen, items.c.rejected, items.c.source)
                        .join(users, users.c.id == assignments.c.user_id)
                        .join(items, items.c.id == assignments.c.item_id)
                        .where(assignments.c.status == "submitted")
                        .order_by(assignments.c.submitted_at, assignments.c.id))
    return [dict(r._mapping) for r in rows]


def pair_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """One annotator pair's agreement on one item: their kappa, or 1.0 where it is undefined (both gave
    one and the same label everywhere)."""
    kappa = cohen_kappa(a, b)
    return (1.0 if list(a) == list(b) else 0.0) if kappa is None else kappa


def compute(conn: Connection, overlap: int, tokenizer: Any = None, mode: str = DEFAULT_LABEL_MODE) -> dict:
    n_items = conn.execute(select(func.count()).select_from(items)).scalar_one()
    subs = submissions(conn)
    by_item: dict[int, list[dict]] = defaultdict(list)
    for s in subs:
        by_item[s["item_id"]].append(s)
    per_user: dict[str, dict] = defaultdict(lambda: {"submitted": 0, "edited": 0, "identical": 0, "rewrite": 0,
                                                     "seconds": 0.0, "a": [], "b": [], "pairs": 0, "same": 0})
    for s in subs:
        u = per_user[s["user"]]
        u["submitted"] += 1
        u[s["verdict"]] += 1
        u["seconds"] += s["seconds"]

    pooled_a: list[int] = []
    pooled_b: list[int] = []
    pairs = same = 0
    per_item = []
    for item_id, subs_of_item in by_item.items():
        labelled = [s for s in subs_of_item if s["verdict"] != "rewrite"]
        item_a: list[int] = []
        item_b: list[int] = []
        item_pairs = item_same = 0
        pair_scores: list[float] = []
        for s, t in itertools.combinations(labelled, 2):
            if s["swapped"] != t["swapped"]:
                continue  # they edited different responses: no common tokens to compare
            original = s["chosen"] if s["swapped"] else s["rejected"]
            la = rejected_token_labels(original, s["edited"], tokenizer, mode)
            lb = rejected_token_labels(original, t["edited"], tokenizer, mode)
            identical = s["edited"] == t["edited"]
            pairs, same = pairs + 1, same + identical
            item_pairs, item_same = item_pairs + 1, item_same + identical
            pooled_a += la
            pooled_b += lb
            item_a += la
            item_b += lb
            pair_scores.append(pair_agreement(la, lb))
            for x, y, lx, ly in ((s, t, la, lb), (t, s, lb, la)):
                u = per_user[x["user"]]
                u["a"] += lx
                u["b"] += ly
                u["pairs"] += 1
                u["same"] += identical
        if item_pairs:
            per_item.append({"item": item_id, "source": subs_of_item[0]["source"],
                             "annotators": [x["user"] for x in subs_of_item], "kappa": cohen_kappa(item_a, item_b),
                             "identical_share": item_same / item_pairs,
                             "agreement": sum(pair_scores) / len(pair_scores)})

    done = sum(len(v) >= overlap for v in by_item.values())
    n_submissions = conn.execute(select(func.count()).select_from(submission_rows)).scalar_one()
    flagged = conn.execute(select(func.count()).select_from(assignments).where(assignments.c.flagged == 1)).scalar_one()
    commented = conn.execute(select(func.count()).select_from(assignments)
                             .where(assignments.c.comment.is_not(None))).scalar_one()
    skipped = conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.status == "open", assignments.c.skipped_at.is_not(None))).scalar_one()
    return {
        "items": n_items, "overlap": overlap, "submissions": len(subs), "needed": n_items * overlap,
        "items_complete": done, "items_started": len(by_item),
        "verdicts": dict(Counter(s["verdict"] for s in subs)),
        "revisions": n_submissions - len(subs),  # resubmissions: submissions beyond each assignment's first
        "flagged": flagged, "commented": commented, "skipped_for_now": skipped,
        "agreement": {"annotator_pairs": pairs, "kappa": cohen_kappa(pooled_a, pooled_b),
                      "item_agreement": (sum(p["agreement"] for p in per_item) / len(per_item)) if per_item else None,
                      "items_compared": len(per_item),
                      "items_with_different_edits": sum(p["identical_share"] < 1 for p in per_item),
                      "identical_share": same / pairs if pairs else None, "labels_compared": len(pooled_a)},
        "annotators": {name: {"submitted": u["submitted"], "edited": u["edited"], "identical": u["identical"],
                              "rewrite": u["rewrite"],
                              "mean_seconds": u["seconds"] / u["submitted"] if u["submitted"] else None,
                              "kappa_vs_others": cohen_kappa(u["a"], u["b"]), "compared_pairs": u["pairs"],
                              "identical_share": u["same"] / u["pairs"] if u["pairs"] else None}
                       for name, u in sorted(per_user.items())},
        "pairs": per_item,  # per pair; kappa None where every label agreed on one value (all 0, usually)
    }
