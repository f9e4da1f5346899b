"""The annotator's pages (next item, the edit page, their items, all done) and the JSON API of the page's
script: live diff, drafts, submit, skip for now, comment and flag."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fgalign.annotate import accounts, queue
from fgalign.annotate.web import Problem, body, flag, number, own, page, session, state, text_field

router = APIRouter()


def _note(conn, a: queue.Assignment, data: dict) -> None:  # noqa: ANN001
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise queue.Refused("'comment' must be text")
    queue.note(conn, a, comment, flag(data.get("flagged")))


def _act(conn, request: Request, s: accounts.Session, aid: int, data: dict, text: str | None) -> str:  # noqa: ANN001
    """Submit (edited | identical | rewrite) or skip for now; the comment and flag travel along."""
    st = state(request)
    a = own(conn, s, aid)
    _note(conn, a, data)
    action = str(data.get("action") or "edited")
    if action == "skip":
        queue.skip(conn, a, text, number(data, "seconds"))
        return "skipped"
    swapped = flag(data.get("swapped"))
    if swapped and not st.choose_preferred:
        raise queue.Refused("this database takes the preference from the pairs file")
    queue.submit(conn, a, action, text, st.overlap, number(data, "seconds"), swapped)
    return "submitted"


def item_context(conn, request: Request, s: accounts.Session, aid: int, text: str | None = None) -> dict:  # noqa: ANN001
    st = state(request)
    a = own(conn, s, aid)
    if text is None:
        text = a.draft if a.draft is not None else a.edited if a.edited is not None else a.original
    prev_id, next_id = queue.neighbours(conn, s.user_id, aid)
    return {"a": a, "text": text, "view": st.diff(a.original, text), "prev_id": prev_id, "next_id": next_id,
            "progress": queue.progress(conn, s.user_id, st.overlap), "user": s.user, "csrf": s.csrf,
            "reviewer": s.reviewer, "max_ratio": st.max_edit_ratio, "choose": st.choose_preferred,
            "history": queue.history(conn, aid), "mode": st.label_mode}


@router.get("/next")
async def next_item(request: Request) -> Response:
    s = await session(request)
    st = state(request)
    aid = await run_in_threadpool(st.tx, queue.claim_next, s.user_id, st.overlap, st.timeout)
    return RedirectResponse("/done" if aid is None else f"/item/{aid}", status_code=303)


@router.get("/done")
async def done(request: Request) -> Response:
    s = await session(request)
    prog = await run_in_threadpool(state(request).read, queue.progress, s.user_id, state(request).overlap)
    return page(request, "done.html", user=s.user, csrf=s.csrf, reviewer=s.reviewer, progress=prog)


@router.get("/mine")
async def mine(request: Request) -> Response:
    s = await session(request)
    rows = await run_in_threadpool(state(request).read, queue.mine, s.user_id)
    return page(request, "mine.html", user=s.user, csrf=s.csrf, reviewer=s.reviewer, rows=rows)


@router.get("/item/{aid}")
async def item_page(request: Request, aid: int) -> Response:
    s = await session(request)
    ctx = await run_in_threadpool(state(request).read, item_context, request, s, aid)
    return page(request, "item.html", **ctx)


@router.post("/item/{aid}")
async def item_form(request: Request, aid: int) -> Response:
    """The page's form without script: submit or skip, then the next item (or the page again with the reason)."""
    s = await session(request)
    data = await body(request, s)
    data.setdefault("flagged", "0")  # an unticked checkbox sends nothing
    text = text_field(data, "edited")
    try:
        await run_in_threadpool(state(request).tx, _act, request, s, aid, data, text)
    except queue.Refused as e:
        ctx = await run_in_threadpool(state(request).read, item_context, request, s, aid, text)
        return page(request, "item.html", e.status, error=str(e), **ctx)
    return RedirectResponse("/next", status_code=303)


@router.get("/api/session")
async def api_session(request: Request) -> dict:
    s = await session(request)
    return {"user": s.user, "csrf": s.csrf, "role": s.role}


@router.get("/api/next")
async def api_next(request: Request) -> dict:
    s = await session(request)
    st = state(request)

    def work(conn):  # noqa: ANN001
        aid = queue.claim_next(conn, s.user_id, st.overlap, st.timeout)
        if aid is None:
            return {"assignment": None}
        a = queue.get(conn, s.user_id, aid)
        return {"assignment": aid, "prompt": a.prompt, "chosen": a.chosen, "rejected": a.rejected,
                "original": a.original, "draft": a.draft, "status": a.status}
    return await run_in_threadpool(st.tx, work)


@router.get("/api/item/{aid}/history")
async def api_history(request: Request, aid: int) -> dict:
    s = await session(request)

    def work(conn):  # noqa: ANN001
        own(conn, s, aid)
        return {"submissions": queue.history(conn, aid)}
    return await run_in_threadpool(state(request).read, work)


@router.post("/api/item/{aid}/diff")
async def api_diff(request: Request, aid: int) -> dict:
    s = await session(request)
    data = await body(request, s)
    text = text_field(data) or ""
    a = await run_in_threadpool(state(request).read, own, s, aid)
    try:
        queue.check_text(text, a)
    except queue.Refused as e:
        raise Problem(e.status, str(e)) from None
    swapped = flag(data.get("swapped"))
    original = a.original if swapped is None else a.chosen if swapped else a.rejected
    return await run_in_threadpool(state(request).diff, original, text)


@router.post("/api/item/{aid}/draft")
async def api_draft(request: Request, aid: int) -> dict:
    s = await session(request)
    data = await body(request, s)
    text = text_field(data) or ""
    st = state(request)

    def work(conn):  # noqa: ANN001
        a = own(conn, s, aid)
        if a.status != "open":
            return {"saved": False, "reason": f"already {a.status}"}
        swapped = flag(data.get("swapped"))
        if swapped and not st.choose_preferred:
            raise queue.Refused("this database takes the preference from the pairs file")
        queue.save_draft(conn, a, text, number(data, "seconds"), swapped)
        return {"saved": True}
    try:
        return await run_in_threadpool(st.tx, work)
    except queue.Refused as e:
        raise Problem(e.status, str(e)) from None


@router.post("/api/item/{aid}/submit")
async def api_submit(request: Request, aid: int) -> dict:
    """Submit, or skip for now with action=skip; the answer comes after the commit."""
    s = await session(request)
    data = await body(request, s)
    try:
        done = await run_in_threadpool(state(request).tx, _act, request, s, aid, data, text_field(data))
    except queue.Refused as e:
        raise Problem(e.status, str(e)) from None
    return {"saved": True, done: True, "next": "/next"}


@router.post("/api/item/{aid}/note")
async def api_note(request: Request, aid: int) -> dict:
    """The comment and flag of an item, on their own (any time, submitted or not)."""
    s = await session(request)
    data = await body(request, s)

    def work(conn):  # noqa: ANN001
        _note(conn, own(conn, s, aid), data)
        return {"saved": True}
    try:
        return await run_in_threadpool(state(request).tx, work)
    except queue.Refused as e:
        raise Problem(e.status, str(e)) from None
