"""What every route shares: the app's state, pages, the session check, request fields, CSRF, errors.

Rules every route follows:
- everything but the login link needs the session cookie (401 otherwise);
- an assignment is looked up together with the session's user, so another annotator's work answers 404
  (the same as a missing one: ids leak nothing); review pages need the reviewer role (403);
- every POST carries the session's CSRF token (header X-CSRF-Token, or a `csrf` form/JSON field), else 403;
- an answer that says "saved" is sent after the transaction committed (db.py: WAL, synchronous=FULL);
- bad submissions (empty, over-long, malformed) get a message, never a 500.
Database work runs in the thread pool; the event loop only parses requests.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from fgalign.annotate import accounts, db, queue
from fgalign.annotate.diffview import diff
from fgalign.labels import DEFAULT_LABEL_MODE

HERE = Path(__file__).parent
COOKIE = "fgalign_session"
MAX_BODY = 256 * 1024  # bytes of one request body; an edit is at most queue.MAX_CHARS characters
templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes .html templates
templates.env.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class Problem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def render_markdown(text: str) -> str:
    """Guidelines as HTML: CommonMark with raw HTML off (it shows as text) and unsafe links refused
    (markdown-it drops javascript:, vbscript:, file: and data: links)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text) if text.strip() else ""


class AnnotateApp:
    """Settings, the engine and the tokenizer shared by all requests."""

    def __init__(self, db_path: str, secure_cookies: bool = False):
        self.engine = db.open_db(db_path)
        self.secure_cookies = secure_cookies
        self.write_lock = threading.Lock()
        s = db.read_settings(self.engine)
        self.overlap = int(s["overlap"])
        self.timeout = float(s["timeout"])
        self.max_edit_ratio = float(s["max_edit_ratio"])
        self.label_mode = s.get("label_mode", DEFAULT_LABEL_MODE)
        self.choose_preferred = s.get("choose_preferred") == "1"
        self.guidelines_html = render_markdown(s.get("guidelines", ""))
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


def state(request: Request) -> AnnotateApp:
    return request.app.state.annotate


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("guidelines", state(request).guidelines_html)
    return templates.TemplateResponse(request, name, context, status_code=status)


async def session(request: Request) -> accounts.Session:
    sid = request.cookies.get(COOKIE)
    s = await run_in_threadpool(state(request).read, accounts.session_of, sid) if sid else None
    if s is None:
        raise Problem(401, "you are not logged in: open the login link you were given (ask for a new one if "
                           "it was used already)")
    return s


async def reviewer(request: Request) -> accounts.Session:
    s = await session(request)
    if not s.reviewer:
        raise Problem(403, "reviewing needs the reviewer role (`fgalign annotate users add NAME --reviewer`)")
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
    return None if value in (None, "") else str(value).lower() in ("1", "true", "on")


def number(data: dict, name: str) -> float | None:
    try:
        return None if data.get(name) in (None, "") else float(data[name])
    except (TypeError, ValueError):
        raise Problem(400, f"'{name}' must be a number") from None
