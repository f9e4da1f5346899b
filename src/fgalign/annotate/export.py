"""Submitted edits → edit records in the format every later stage reads (`train-rm --data OUT` as is).

A record is the pair with `edited` set; `meta` keeps the pair's own meta plus the annotator, the seconds
spent, the edit ratio and the item's source line. "Needs a rewrite" verdicts are never exported as edits;
"nothing to fix" ones are (edited == rejected: the readers skip and count them, as for any no-op edit).

A reviewer's decision (review.py) wins over adjudication: a reviewed pair gives one record, the reviewed edit
(or nothing for a "rewrite" decision), with `reviewed_by` and `accepted` in meta. A resubmitted assignment is
exported with its latest submission; `meta.revisions` counts its submissions.

Adjudication when several annotators did a pair and no reviewer decided:
- `all`: one record per submission;
- `first`: the earliest submission of each pair;
- `majority`: the outcome (an exact edited text, or "rewrite") most annotators gave, if it beats every other
  outcome; ties are left out and counted (`--adjudicate all` keeps them).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from types import SimpleNamespace

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from fgalign.annotate.db import assignments, items, submissions, users
from fgalign.annotate.queue import edit_ratio
from fgalign.annotate.review import latest_reviews

ADJUDICATION = ("majority", "first", "all")


def _record(item, sub) -> dict:
    swapped = bool(sub.swapped)
    meta = {**json.loads(item.meta), "source": item.source, "annotator": sub.user, "seconds": round(sub.seconds, 1),
            "edit_ratio": sub.edit_ratio, "verdict": sub.verdict, "revisions": sub.revisions}
    if sub.comment:
        meta["comment"] = sub.comment
    if sub.flagged:
        meta["flagged"] = True
    if swapped:  # the annotator preferred the file's rejected response: their choice is the record's
        meta["preference"] = "annotator (swapped)"
    return {"prompt": item.prompt, "chosen": item.rejected if swapped else item.chosen,
            "rejected": item.chosen if swapped else item.rejected, "edited": sub.edited, "meta": meta}


def collect(conn: Connection, adjudicate: str) -> tuple[list[dict], dict]:
    """The records to export and counts of what was left out."""
    item_rows = {r.id: r for r in conn.execute(select(items).order_by(items.c.position))}
    revisions = (select(submissions.c.assignment_id, func.count().label("n"))
                 .group_by(submissions.c.assignment_id).subquery())
    subs = defaultdict(list)
    for s in conn.execute(select(assignments.c.id, assignments.c.item_id, assignments.c.verdict,
                                 assignments.c.edited, assignments.c.swapped, assignments.c.seconds,
                                 assignments.c.edit_ratio, assignments.c.comment, assignments.c.flagged,
                                 func.coalesce(revisions.c.n, 1).label("revisions"), users.c.name.label("user"))
                          .join(users, users.c.id == assignments.c.user_id)
                          .outerjoin(revisions, revisions.c.assignment_id == assignments.c.id)
                          .where(assignments.c.status == "submitted")
                          .order_by(assignments.c.submitted_at, assignments.c.id)):
        subs[s.item_id].append(s)
    reviewed = latest_reviews(conn)
    records, counts = [], Counter()
    for item_id, item in item_rows.items():
        chosen_subs = subs.get(item_id, [])
        if item_id in reviewed:
            rec = _reviewed(item, reviewed[item_id], chosen_subs)
            if rec is None:
                counts["reviewed as needing a rewrite"] += 1
            else:
                records.append(rec)
            continue
        if not chosen_subs:
            counts["pairs without submissions"] += 1
            continue
        if adjudicate == "first":
            chosen_subs = chosen_subs[:1]
        elif adjudicate == "majority":
            votes = Counter((s.swapped, s.verdict == "rewrite", s.edited) for s in chosen_subs)
            (top, n), *rest = votes.most_common()
            if rest and rest[0][1] == n:
                counts["pairs without a majority (tie)"] += 1
                continue
            first = next(s for s in chosen_subs if (s.swapped, s.verdict == "rewrite", s.edited) == top)
            chosen_subs = [first]
        for s in chosen_subs:
            if s.verdict == "rewrite":
                counts["rewrite verdicts (not edits)"] += 1
                continue
            rec = _record(item, s)
            if adjudicate == "majority":
                rec["meta"]["annotators"] = [x.user for x in subs[item_id]]
                rec["meta"]["votes"] = f"{n}/{len(subs[item_id])}"
            records.append(rec)
    return records, dict(counts)


def _reviewed(item, review: dict, subs: list) -> dict | None:
    """The record of a reviewed pair: the reviewer's decision, credited to the annotator it accepted."""
    if review["verdict"] == "rewrite":
        return None
    accepted = next((s for s in subs if s.id == review["accepted_assignment_id"]), None)
    original = item.chosen if review["swapped"] else item.rejected
    rec = _record(item, SimpleNamespace(
        swapped=review["swapped"], edited=review["edited"], verdict=review["verdict"],
        user=accepted.user if accepted else review["reviewer"], seconds=accepted.seconds if accepted else 0.0,
        edit_ratio=edit_ratio(original, review["edited"]), revisions=accepted.revisions if accepted else 1,
        comment=accepted.comment if accepted else None, flagged=accepted.flagged if accepted else 0))
    rec["meta"].update(reviewed_by=review["reviewer"], accepted=accepted.user if accepted else "reviewer's own edit",
                       annotators=[s.user for s in subs])
    return rec
