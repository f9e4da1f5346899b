"""Login by link, logout, the guidelines page, and the front door."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fgalign.annotate import accounts
from fgalign.annotate.web import COOKIE, Problem, body, page, session, state

router = APIRouter()
BAD_LINK = ("this login link is not valid, has expired or was used already; ask for a new one "
            "(`fgalign annotate users link NAME`)")


@router.get("/login/{token}")
async def login_page(request: Request, token: str) -> Response:
    """Opening the link only asks; the POST spends it. Link previews (chat apps, mail scanners) fetch
    links with GET and would otherwise burn a one-time link before the annotator sees it."""
    name = await run_in_threadpool(state(request).read, accounts.link_owner, token)
    if name is None:
        raise Problem(403, BAD_LINK)
    return page(request, "login.html", user=name, token=token)


@router.post("/login/{token}")
async def login(request: Request, token: str) -> Response:
    # No CSRF token here: the secret in the path is what a forged request could not know.
    result = await run_in_threadpool(state(request).tx, accounts.login, token)
    if result is None:
        raise Problem(403, BAD_LINK)
    response = RedirectResponse("/next", status_code=303)
    response.set_cookie(COOKIE, result[0], max_age=30 * 24 * 3600, httponly=True, samesite="lax",
                        secure=state(request).secure_cookies)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    s = await session(request)
    await body(request, s)
    await run_in_threadpool(state(request).tx, accounts.logout, request.cookies.get(COOKIE))
    response = page(request, "message.html", title="Logged out", message="You are logged out.")
    response.delete_cookie(COOKIE)
    return response


@router.get("/")
async def index(request: Request) -> Response:
    await session(request)
    return RedirectResponse("/next", status_code=303)


@router.get("/guidelines")
async def guidelines(request: Request) -> Response:
    s = await session(request)
    return page(request, "guidelines.html", user=s.user, csrf=s.csrf, reviewer=s.reviewer, guidelines_page=True)
