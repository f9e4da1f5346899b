"""The annotation web app (FastAPI): login by link, the edit page, and the small JSON API its script uses.

Rules every route follows:
- everything but the login link needs the session cookie (401 otherwise);
- an assignment is looked up together with the session's user, so another annotator's work answers 404
  (the same as a missing one: ids leak nothing);
- every POST carries the session's CSRF token (header X-CSRF-Token, or a `csrf` form/JSON field), else 403;
- an answer that says "saved" is sent after the transaction committed (db.py: WAL, synchronous=FULL);
- bad submissions (empty, over-long, malformed) get a message, never a 500.
Database work runs in the thread pool; the event loop only parses requests.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from fgalign.annotate import accounts, db, queue
from fgalign.annotate.diffview import diff

HERE = Path(__file__).parent
COOKIE = "fgalign_session"
MAX_BODY = 256 * 1024  # bytes of one request body; an edit is at most queue.MAX_CHARS characters
SECURITY_HEADERS = {
    # No inline script or style anywhere: data from the pairs file can never run, even if escaping failed.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the login link carries a secret
    "Cache-Control": "no-store",
}


class AnnotateApp:
    """Settings, the engine and the tokenizer shared by all requests."""

    def __init__(self, db_path: str):
        self.engine = db.open_db(db_path)
        self.write_lock = threading.Lock()
        s = db.read_settings(self.engine)
        self.overlap = int(s["overlap"])
        self.timeout = float(s["timeout"])
        self.max_edit_ratio = float(s["max_edit_ratio"])
        self.label_mode = s.get("label_mode", "tokens")
        self.choose_preferred = s.get("choose_preferred") == "1"
        self.tokenizer = None
        if s.get("tokenizer"):
            from fgalign.labels.stage import load_any_tokenizer

            self.tokenizer = load_any_tokenizer(s["tokenizer"])

    def tx(self, fn: Callable, *args: Any) -> Any:
        """Run fn(conn, *args) in one transaction (committed before this returns).

        Writers of this process queue on a lock instead of on SQLite's busy handler, which polls with
        growing sleeps and let some submits wait seconds under 20 concurrent annotators."""
        with self.write_lock, self.engine.begin() as conn:
            return fn(conn, *args)

    def read(self, fn: Callable, *args: Any) -> Any:
        """Run fn(conn, *args) in a read-only transaction (no write lock: never waits behind a commit)."""
        with db.read_only(self.engine) as conn:
            return fn(conn, *args)

    def diff(self, original: str, edited: str) -> dict:
        view = diff(original, edited, self.tokenizer, self.label_mode)
        view["ratio"] = queue.edit_ratio(original, edited)
        view["over"] = view["ratio"] > self.max_edit_ratio
        return view


class Problem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(db_path: str, secure_cookies: bool = False) -> FastAPI:
    state = AnnotateApp(db_path)
    app = FastAPI(title="fgalign annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes .html templates
    app.state.annotate = state

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        if wants_json(request):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return page(request, "message.html", exc.status, title=f"{exc.status}", message=exc.message)

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # noqa: ANN001
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"error": f"request too large (over {MAX_BODY // 1024} KiB)"}, status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def session(request: Request) -> accounts.Session:
        sid = request.cookies.get(COOKIE)
        s = await run_in_threadpool(state.read, accounts.session_of, sid) if sid else None
        if s is None:
            raise Problem(401, "you are not logged in: open the login link you were given (ask for a new one if "
                               "it was used already)")
        return s

    async def body(request: Request, s: accounts.Session) -> dict:
        """The request's fields (JSON or form), after the CSRF check."""
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise Problem(413, f"request too large (over {MAX_BODY // 1024} KiB)")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(raw or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Problem(400, "the request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise Problem(400, "expected a JSON object")
        else:
            data = dict(await request.form())
        if not accounts.csrf_ok(s, request.headers.get("x-csrf-token") or data.get("csrf")):
            raise Problem(403, "missing or wrong CSRF token: reload the page and try again")
        return data

    def own(conn, s: accounts.Session, aid: int) -> queue.Assignment:  # noqa: ANN001
        a = queue.get(conn, s.user_id, aid)
        if a is None:
            raise Problem(404, "no such item among yours")
        return a

    def text_field(data: dict, name: str = "text") -> str | None:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise Problem(400, f"'{name}' must be text")
        return value

    def flag(value: Any) -> bool | None:
        return None if value in (None, "") else str(value).lower() in ("1", "true")

    def number(data: dict, name: str) -> float | None:
        try:
            return None if data.get(name) in (None, "") else float(data[name])
        except (TypeError, ValueError):
            raise Problem(400, f"'{name}' must be a number") from None

    # ---- pages -------------------------------------------------------------------------------------------
    @app.get("/login/{token}")
    async def login_page(request: Request, token: str) -> Response:
        """Opening the link only asks; the POST spends it. Link previews (chat apps, mail scanners) fetch
        links with GET and would otherwise burn a one-time link before the annotator sees it."""
        name = await run_in_threadpool(state.read, accounts.link_owner, token)
        if name is None:
            raise Problem(403, "this login link is not valid or was used already; ask for a new one "
                               "(`fgalign annotate users link NAME`)")
        return page(request, "login.html", user=name, token=token)

    @app.post("/login/{token}")
    async def login(request: Request, token: str) -> Response:
        # No CSRF token here: the secret in the path is what a forged request could not know.
        result = await run_in_threadpool(state.tx, accounts.login, token)
        if result is None:
            raise Problem(403, "this login link is not valid or was used already; ask for a new one "
                               "(`fgalign annotate users link NAME`)")
        response = RedirectResponse("/next", status_code=303)
        response.set_cookie(COOKIE, result[0], max_age=30 * 24 * 3600, httponly=True, samesite="lax",
                            secure=secure_cookies)
        return response

    @app.get("/")
    async def index(request: Request) -> Response:
        await session(request)
        return RedirectResponse("/next", status_code=303)

    @app.get("/next")
    async def next_item(request: Request) -> Response:
        s = await session(request)
        aid = await run_in_threadpool(state.tx, queue.claim_next, s.user_id, state.overlap, state.timeout)
        if aid is None:
            prog = await run_in_threadpool(state.read, queue.progress, s.user_id, state.overlap)
            return page(request, "message.html", title="All done",
                        message=f"Nothing left for you: you submitted {prog['mine']} edits. Thank you!")
        return RedirectResponse(f"/item/{aid}", status_code=303)

    def item_context(conn, s: accounts.Session, aid: int, text: str | None = None) -> dict:  # noqa: ANN001
        a = own(conn, s, aid)
        if text is None:
            text = a.draft if a.draft is not None else a.edited if a.edited is not None else a.original
        prev_id, next_id = queue.neighbours(conn, s.user_id, aid)
        return {"a": a, "text": text, "view": state.diff(a.original, text), "prev_id": prev_id, "next_id": next_id,
                "progress": queue.progress(conn, s.user_id, state.overlap), "user": s.user, "csrf": s.csrf,
                "max_ratio": state.max_edit_ratio, "choose": state.choose_preferred}

    @app.get("/item/{aid}")
    async def item_page(request: Request, aid: int) -> Response:
        s = await session(request)
        ctx = await run_in_threadpool(state.read, item_context, s, aid)
        return page(request, "item.html", **ctx)

    @app.post("/item/{aid}")
    async def item_form(request: Request, aid: int) -> Response:
        """The page's form without script: submit, then the next item (or the page again with the reason)."""
        s = await session(request)
        data = await body(request, s)
        text = text_field(data, "edited")
        try:
            await run_in_threadpool(state.tx, _submit, s, aid, data, text)
        except queue.Refused as e:
            ctx = await run_in_threadpool(state.read, item_context, s, aid, text)
            return page(request, "item.html", e.status, error=str(e), **ctx)
        return RedirectResponse("/next", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        s = await session(request)
        await body(request, s)
        await run_in_threadpool(state.tx, accounts.logout, request.cookies.get(COOKIE))
        response = page(request, "message.html", title="Logged out", message="You are logged out.")
        response.delete_cookie(COOKIE)
        return response

    def _submit(conn, s: accounts.Session, aid: int, data: dict, text: str | None) -> None:  # noqa: ANN001
        a = own(conn, s, aid)
        queue.submit(conn, a, str(data.get("action") or "edited"), text, state.overlap, number(data, "seconds"),
                     chosen_swap(data))

    def chosen_swap(data: dict) -> bool | None:
        swapped = flag(data.get("swapped"))
        if swapped and not state.choose_preferred:
            raise queue.Refused("this database takes the preference from the pairs file")
        return swapped

    # ---- JSON API (the page's script, and scripted clients) -----------------------------------------------
    @app.get("/api/session")
    async def api_session(request: Request) -> dict:
        s = await session(request)
        return {"user": s.user, "csrf": s.csrf}

    @app.get("/api/next")
    async def api_next(request: Request) -> dict:
        s = await session(request)

        def work(conn):  # noqa: ANN001
            aid = queue.claim_next(conn, s.user_id, state.overlap, state.timeout)
            if aid is None:
                return {"assignment": None}
            a = queue.get(conn, s.user_id, aid)
            return {"assignment": aid, "prompt": a.prompt, "chosen": a.chosen, "rejected": a.rejected,
                    "original": a.original, "draft": a.draft, "status": a.status}
        return await run_in_threadpool(state.tx, work)

    @app.post("/api/item/{aid}/diff")
    async def api_diff(request: Request, aid: int) -> dict:
        s = await session(request)
        data = await body(request, s)
        text = text_field(data) or ""
        a = await run_in_threadpool(state.read, own, s, aid)
        try:
            queue.check_text(text, a)
        except queue.Refused as e:
            raise Problem(e.status, str(e)) from None
        swapped = flag(data.get("swapped"))
        original = a.original if swapped is None else a.chosen if swapped else a.rejected
        return await run_in_threadpool(state.diff, original, text)

    @app.post("/api/item/{aid}/draft")
    async def api_draft(request: Request, aid: int) -> dict:
        s = await session(request)
        data = await body(request, s)
        text = text_field(data) or ""

        def work(conn):  # noqa: ANN001
            a = own(conn, s, aid)
            if a.status != "open":
                return {"saved": False, "reason": f"already {a.status}"}
            queue.save_draft(conn, a, text, number(data, "seconds"), chosen_swap(data))
            return {"saved": True}
        try:
            return await run_in_threadpool(state.tx, work)
        except queue.Refused as e:
            raise Problem(e.status, str(e)) from None

    @app.post("/api/item/{aid}/submit")
    async def api_submit(request: Request, aid: int) -> dict:
        s = await session(request)
        data = await body(request, s)
        try:
            await run_in_threadpool(state.tx, _submit, s, aid, data, text_field(data))
        except queue.Refused as e:
            raise Problem(e.status, str(e)) from None
        return {"saved": True, "next": "/next"}

    return app
