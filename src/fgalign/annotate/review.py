"""The reviewer's side: items whose annotators disagree, and the reviewer's decision on each.

An item is in the review queue when two or more annotators submitted it and their outcomes differ (an
outcome is the edited text, "needs a rewrite", and which response they edited). A reviewer sees the edits
side by side, each with its diff, and either accepts one or writes the final edit. Decisions are kept as
rows (the latest one counts), and `export` takes the reviewed edit wherever there is one.
"""
from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from fgalign.annotate.db import assignments, items, reviews, users
from fgalign.annotate.queue import MAX_CHARS, VERDICTS, Refused, edit_ratio


def outcome(verdict: str, edited: str | None, swapped: int | bool) -> tuple:
    """What two annotators must share to agree on an item."""
    return bool(swapped), verdict == "rewrite", None if verdict == "rewrite" else edited


def _submitted(conn: Connection, item_id: int | None = None) -> dict[int, list]:
    q = (select(assignments.c.id, assignments.c.item_id, assignments.c.verdict, assignments.c.edited,
                assignments.c.swapped, assignments.c.edit_ratio, assignments.c.submitted_at,
                assignments.c.comment, assignments.c.flagged, users.c.name.label("user"))
         .join(users, users.c.id == assignments.c.user_id).where(assignments.c.status == "submitted")
         .order_by(assignments.c.submitted_at, assignments.c.id))
    if item_id is not None:
        q = q.where(assignments.c.item_id == item_id)
    out: dict[int, list] = defaultdict(list)
    for r in conn.execute(q):
        out[r.item_id].append(r)
    return out


def latest_reviews(conn: Connection) -> dict[int, dict]:
    """item id → its latest review (with the reviewer's name)."""
    rows = conn.execute(select(reviews, users.c.name.label("reviewer")).join(users, users.c.id == reviews.c.reviewer_id)
                        .order_by(reviews.c.created_at, reviews.c.id))
    return {r.item_id: dict(r._mapping) for r in rows}


def disagreements(conn: Connection) -> list[dict]:
    """The review queue: every item whose annotators disagree, not yet reviewed first, in file order."""
    subs = _submitted(conn)
    reviewed = latest_reviews(conn)
    positions = {r.id: (r.position, r.source) for r in conn.execute(select(items.c.id, items.c.position, items.c.source))}
    queue = []
    for item_id, rows in subs.items():
        if len(rows) < 2 or len({outcome(r.verdict, r.edited, r.swapped) for r in rows}) < 2:
            continue
        position, source = positions[item_id]
        queue.append({"item": item_id, "position": position, "source": source,
                      "annotators": [r.user for r in rows], "reviewed": item_id in reviewed,
                      "reviewer": reviewed[item_id]["reviewer"] if item_id in reviewed else None})
    return sorted(queue, key=lambda q: (q["reviewed"], q["position"]))


def item_for_review(conn: Connection, item_id: int) -> dict | None:
    """The item, every annotator's current submission and the latest review; None if no such item."""
    item = conn.execute(select(items).where(items.c.id == item_id)).first()
    if item is None:
        return None
    return {"item": item, "submissions": _submitted(conn, item_id).get(item_id, []),
            "review": latest_reviews(conn).get(item_id)}


def resolve(conn: Connection, reviewer_id: int, item_id: int, accept: int | None = None,
            text: str | None = None, verdict: str = "edited", swapped: bool = False) -> dict:
    """Record a decision: accept the submission `accept` of this item, or take the reviewer's own `text`."""
    found = item_for_review(conn, item_id)
    if found is None:
        raise Refused("no such item", status=404)
    item = found["item"]
    if accept is not None:
        sub = next((s for s in found["submissions"] if s.id == accept), None)
        if sub is None:
            raise Refused("that submission is not one of this item's", status=404)
        values = {"accepted_assignment_id": sub.id, "verdict": sub.verdict, "edited": sub.edited,
                  "swapped": int(sub.swapped)}
    else:
        if verdict not in VERDICTS:
            raise Refused(f"unknown verdict '{verdict}': expected one of {', '.join(VERDICTS)}")
        original = item.chosen if swapped else item.rejected
        if verdict == "edited":
            if not isinstance(text, str) or not text.strip():
                raise Refused("the final edit is empty")
            if len(text) > MAX_CHARS:
                raise Refused(f"the final edit is longer than {MAX_CHARS:,} characters")
            verdict = "identical" if text == original else "edited"
        text = original if verdict == "identical" else None if verdict == "rewrite" else text
        values = {"accepted_assignment_id": None, "verdict": verdict, "edited": text, "swapped": int(swapped)}
    conn.execute(insert(reviews).values(item_id=item_id, reviewer_id=reviewer_id, created_at=time.time(), **values))
    original = item.chosen if values["swapped"] else item.rejected
    return {**values, "edit_ratio": None if values["edited"] is None else edit_ratio(original, values["edited"])}
