"""Who edits what: handing out items with overlap, drafts, submissions and the abandoned-work timeout.

Each item is done by `overlap` distinct annotators. An item's places are taken by its submitted and open
assignments; an open one left idle past the timeout is expired when someone needs a place, so abandoned
work returns to the queue. Every function runs inside the caller's transaction (SQLite: BEGIN IMMEDIATE,
see db.py), so two annotators claiming at once are serialized and an item never goes beyond its overlap.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from fgalign.annotate.db import assignments, items, submissions

VERDICTS = ("edited", "identical", "rewrite")
MAX_CHARS = 20_000  # longest edit accepted; a longer one is a paste accident, not a minimal edit


class Refused(Exception):
    """A request the annotator must be told about (shown on the page), never a server error."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def edit_ratio(original: str, edited: str) -> float:
    """Normalized character edit distance in [0, 1] — the edit stage's minimality measure
    (editors/base.py, not imported: annotate and editors are peer stages)."""
    return Levenshtein.normalized_distance(original, edited)


@dataclass
class Assignment:
    id: int
    item_id: int
    position: int
    status: str
    prompt: str
    chosen: str
    rejected: str
    draft: str | None
    edited: str | None
    verdict: str | None
    swapped: bool
    seconds: float
    comment: str | None = None
    flagged: bool = False
    skipped: bool = False

    @property
    def original(self) -> str:
        """The response being edited: the rejected one, or the file's chosen one if the annotator swapped."""
        return self.chosen if self.swapped else self.rejected

    @property
    def preferred(self) -> str:
        return self.rejected if self.swapped else self.chosen


def _taken(conn: Connection, item_id: int) -> int:
    return conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.item_id == item_id, assignments.c.status.in_(("open", "submitted")))).scalar_one()


def get(conn: Connection, user_id: int, assignment_id: int) -> Assignment | None:
    """One of this user's assignments; None for anyone else's (the caller answers 404: no leak)."""
    row = conn.execute(select(assignments, items.c.position, items.c.prompt, items.c.chosen, items.c.rejected)
                       .join(items, items.c.id == assignments.c.item_id)
                       .where(assignments.c.id == assignment_id, assignments.c.user_id == user_id)).first()
    if row is None:
        return None
    return Assignment(row.id, row.item_id, row.position, row.status, row.prompt, row.chosen, row.rejected,
                      row.draft, row.edited, row.verdict, bool(row.swapped), row.seconds, row.comment,
                      bool(row.flagged), row.skipped_at is not None)


def claim_next(conn: Connection, user_id: int, overlap: int, timeout: float) -> int | None:
    """The user's open assignment, or a new one on the first item with a free place, or (when there is no
    new one) the item they skipped longest ago; None when done."""
    now = time.time()
    mine = conn.execute(select(assignments.c.id).where(assignments.c.user_id == user_id,
                                                       assignments.c.status == "open",
                                                       assignments.c.skipped_at.is_(None))
                        .order_by(assignments.c.assigned_at)).first()
    if mine is not None:
        conn.execute(update(assignments).where(assignments.c.id == mine.id).values(active_at=now))
        return mine.id
    new = _claim_new(conn, user_id, overlap, timeout, now)
    if new is not None:
        return new
    skipped = conn.execute(select(assignments.c.id).where(assignments.c.user_id == user_id,
                                                          assignments.c.status == "open")
                           .order_by(assignments.c.skipped_at)).first()
    if skipped is not None:
        conn.execute(update(assignments).where(assignments.c.id == skipped.id)
                     .values(active_at=now, skipped_at=None))
        return skipped.id
    return None


def _claim_new(conn: Connection, user_id: int, overlap: int, timeout: float, now: float) -> int | None:
    conn.execute(update(assignments).where(assignments.c.status == "open",
                                           assignments.c.active_at < now - timeout).values(status="expired"))
    taken = (select(assignments.c.item_id, func.count().label("n")).where(
        assignments.c.status.in_(("open", "submitted"))).group_by(assignments.c.item_id).subquery())
    done_by_me = select(assignments.c.item_id).where(assignments.c.user_id == user_id,
                                                     assignments.c.status != "expired")
    candidates = conn.execute(
        select(items.c.id).outerjoin(taken, taken.c.item_id == items.c.id)
        .where(func.coalesce(taken.c.n, 0) < overlap, items.c.id.not_in(done_by_me))
        .order_by(items.c.position).limit(8)).scalars().all()
    for item_id in candidates:
        # Other databases: lock the item row, then count again (SQLite's BEGIN IMMEDIATE already serializes).
        conn.execute(select(items.c.id).where(items.c.id == item_id).with_for_update())
        if _taken(conn, item_id) >= overlap:
            continue
        old = conn.execute(select(assignments.c.id).where(assignments.c.item_id == item_id,
                                                          assignments.c.user_id == user_id)).first()
        if old is not None:  # the user's own expired assignment comes back, draft included
            conn.execute(update(assignments).where(assignments.c.id == old.id)
                         .values(status="open", assigned_at=now, active_at=now, skipped_at=None))
            return old.id
        return conn.execute(insert(assignments).values(item_id=item_id, user_id=user_id, status="open",
                                                       assigned_at=now, active_at=now, seconds=0.0)
                            ).inserted_primary_key[0]
    return None


def _add_seconds(a: Assignment, seconds: float | None) -> float:
    """Time on task: the page reports the seconds it was visible since its last report; clamp to sane."""
    add = float(seconds or 0.0)
    return a.seconds + (min(max(add, 0.0), 3600.0) if math.isfinite(add) else 0.0)


def save_draft(conn: Connection, a: Assignment, text: str, seconds: float | None = None,
               swapped: bool | None = None) -> None:
    """Keep what the annotator typed (and which response they chose to edit) so a closed tab loses nothing."""
    check_text(text, a)
    conn.execute(update(assignments).where(assignments.c.id == a.id).values(
        draft=text, active_at=time.time(), seconds=_add_seconds(a, seconds),
        swapped=int(a.swapped if swapped is None else swapped)))


def check_text(text: str, a: Assignment) -> None:
    if not isinstance(text, str):
        raise Refused("the edit must be text")
    if len(text) > MAX_CHARS:
        raise Refused(f"the edit is {len(text):,} characters long; at most {MAX_CHARS:,} are accepted "
                      f"(the original has {len(a.original):,}) — a minimal edit changes a few words")


def submit(conn: Connection, a: Assignment, verdict: str, text: str | None, overlap: int,
           seconds: float | None = None, swapped: bool | None = None) -> None:
    """Record a verdict: `edited` (the text), `identical` (nothing to fix) or `rewrite` (skip, not exported).

    A resubmission (the annotator went back with "previous") becomes the assignment's current answer; every
    submission stays in the `submissions` table with its time (`history`). An assignment that
    expired counts only if its item still has a free place; otherwise the annotator is told why.
    """
    if verdict not in VERDICTS:
        raise Refused(f"unknown action '{verdict}': expected one of {', '.join(VERDICTS)}")
    swapped = a.swapped if swapped is None else bool(swapped)
    original = a.chosen if swapped else a.rejected
    if verdict == "edited":
        check_text(text, a)
        if not text.strip():
            raise Refused("the edit is empty: a minimal edit keeps what is right. Use “needs a rewrite, skip” "
                          "if nothing can be kept, or “nothing to fix” if it is fine as it is")
        if text == original:
            verdict = "identical"  # an edit that changes nothing is the "nothing to fix" verdict
    if verdict == "identical":
        text = original
    if verdict == "rewrite":
        text = None
    if a.status == "expired" and _taken(conn, a.item_id) >= overlap:
        raise Refused("this item was handed to another annotator after you left it idle; your draft is kept "
                      "but cannot be submitted — go on with the next item", status=409)
    now = time.time()
    values = dict(verdict=verdict, edited=text, swapped=int(swapped), seconds=_add_seconds(a, seconds),
                  edit_ratio=None if text is None else edit_ratio(original, text), submitted_at=now)
    conn.execute(update(assignments).where(assignments.c.id == a.id).values(
        status="submitted", active_at=now, draft=None, skipped_at=None, **values))
    conn.execute(insert(submissions).values(assignment_id=a.id, **values))


def skip(conn: Connection, a: Assignment, text: str | None = None, seconds: float | None = None) -> None:
    """"Skip for now": keep the draft and the place, hand out the user's other work first, then this."""
    if a.status != "open":
        raise Refused(f"this item is {a.status}: only an open item can be skipped")
    if text is not None:
        check_text(text, a)
    conn.execute(update(assignments).where(assignments.c.id == a.id).values(
        skipped_at=time.time(), active_at=time.time(), seconds=_add_seconds(a, seconds),
        draft=a.draft if text is None else text))


MAX_COMMENT = 2_000


def note(conn: Connection, a: Assignment, comment: str | None, flagged: bool | None) -> None:
    """The annotator's comment on the item and whether they flagged it (any status, any time)."""
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise Refused(f"the comment must be text of at most {MAX_COMMENT:,} characters")
    values: dict = {}
    if comment is not None:
        values["comment"] = comment.strip() or None
    if flagged is not None:
        values["flagged"] = int(flagged)
    if values:
        conn.execute(update(assignments).where(assignments.c.id == a.id).values(**values))


def history(conn: Connection, assignment_id: int) -> list[dict]:
    """Every submission of the assignment, oldest first (a resubmission never replaces the earlier one)."""
    rows = conn.execute(select(submissions).where(submissions.c.assignment_id == assignment_id)
                        .order_by(submissions.c.submitted_at, submissions.c.id))
    return [dict(r._mapping) for r in rows]


def neighbours(conn: Connection, user_id: int, assignment_id: int) -> tuple[int | None, int | None]:
    """The user's assignments before and after this one (in the order they were handed out)."""
    ids = conn.execute(select(assignments.c.id).where(assignments.c.user_id == user_id,
                                                      assignments.c.status != "expired")
                       .order_by(assignments.c.assigned_at, assignments.c.id)).scalars().all()
    if assignment_id not in ids:
        return None, None
    k = ids.index(assignment_id)
    return (ids[k - 1] if k > 0 else None), (ids[k + 1] if k + 1 < len(ids) else None)


def left_for(conn: Connection, user_id: int, overlap: int) -> int:
    """How many items this annotator can still be given: their open ones plus those with a free place that
    they have not done (others may take some of those places first)."""
    open_mine = conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.user_id == user_id, assignments.c.status == "open")).scalar_one()
    taken = (select(assignments.c.item_id, func.count().label("n")).where(
        assignments.c.status.in_(("open", "submitted"))).group_by(assignments.c.item_id).subquery())
    mine = select(assignments.c.item_id).where(assignments.c.user_id == user_id, assignments.c.status != "expired")
    free = conn.execute(select(func.count()).select_from(items).outerjoin(taken, taken.c.item_id == items.c.id)
                        .where(func.coalesce(taken.c.n, 0) < overlap, items.c.id.not_in(mine))).scalar_one()
    return open_mine + free


def progress(conn: Connection, user_id: int, overlap: int) -> dict:
    """This annotator's submissions and the whole job's: for the progress bar, and what is left for them."""
    mine = conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.user_id == user_id, assignments.c.status == "submitted")).scalar_one()
    submitted = conn.execute(select(func.count()).select_from(assignments).where(
        assignments.c.status == "submitted")).scalar_one()
    total = conn.execute(select(func.count()).select_from(items)).scalar_one() * overlap
    return {"mine": mine, "submitted": submitted, "total": total, "left": left_for(conn, user_id, overlap)}


def mine(conn: Connection, user_id: int) -> list[dict]:
    """The annotator's items in the order they got them, with status and verdict (the "your items" page)."""
    rows = conn.execute(select(assignments.c.id, assignments.c.status, assignments.c.verdict, assignments.c.flagged,
                               assignments.c.skipped_at, assignments.c.submitted_at, items.c.position, items.c.prompt)
                        .join(items, items.c.id == assignments.c.item_id)
                        .where(assignments.c.user_id == user_id, assignments.c.status != "expired")
                        .order_by(assignments.c.assigned_at, assignments.c.id))
    return [dict(r._mapping) for r in rows]
