"""The reviewer's pages: the queue of items whose annotators disagree, and one item's edits side by side
(each with its diff against the response it edits) with "accept this one" or "write the final edit"."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fgalign.annotate import queue, review
from fgalign.annotate.web import Problem, body, page, reviewer, state, text_field

router = APIRouter()


def review_context(conn, request: Request, item_id: int) -> dict:  # noqa: ANN001
    st = state(request)
    found = review.item_for_review(conn, item_id)
    if found is None:
        raise Problem(404, "no such item")
    item = found["item"]
    cards = []
    for sub in found["submissions"]:
        original = item.chosen if sub.swapped else item.rejected
        cards.append({"sub": sub, "original": original,
                      "view": None if sub.edited is None else st.diff(original, sub.edited)})
    first_edit = next((s.edited for s in found["submissions"] if s.edited is not None and not s.swapped), None)
    return {"item": item, "cards": cards, "review": found["review"],
            "final": first_edit if first_edit is not None else item.rejected}


@router.get("/review")
async def review_queue(request: Request) -> Response:
    s = await reviewer(request)
    rows = await run_in_threadpool(state(request).read, review.disagreements)
    return page(request, "review_queue.html", user=s.user, csrf=s.csrf, reviewer=True, rows=rows)


@router.get("/review/{item_id}")
async def review_page(request: Request, item_id: int) -> Response:
    s = await reviewer(request)
    ctx = await run_in_threadpool(state(request).read, review_context, request, item_id)
    return page(request, "review_item.html", user=s.user, csrf=s.csrf, reviewer=True, **ctx)


@router.post("/review/{item_id}")
async def review_decide(request: Request, item_id: int) -> Response:
    """accept=<submission's assignment id>, or action=final with `final` (the reviewer's edit), or
    action=identical / rewrite; then back to the queue."""
    s = await reviewer(request)
    data = await body(request, s)
    accept = data.get("accept")
    try:
        accept_id = None if accept in (None, "") else int(accept)
    except (TypeError, ValueError):
        raise Problem(400, "'accept' must be a submission number") from None
    action = str(data.get("action") or ("accept" if accept_id is not None else "edited"))
    verdict = "edited" if action in ("final", "edited", "accept") else action
    text = text_field(data, "final")
    try:
        await run_in_threadpool(state(request).tx, review.resolve, s.user_id, item_id, accept_id, text, verdict)
    except queue.Refused as e:
        if e.status == 404:
            raise Problem(e.status, str(e)) from None
        ctx = await run_in_threadpool(state(request).read, review_context, request, item_id)
        return page(request, "review_item.html", e.status, user=s.user, csrf=s.csrf, reviewer=True,
                    error=str(e), **ctx)
    return RedirectResponse("/review", status_code=303)
