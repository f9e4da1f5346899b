"""The annotation web app (FastAPI): set-up, security headers, error pages; the routes live in
routes_auth.py (login, logout, guidelines), routes_items.py (the edit page and its JSON API) and
routes_review.py (the reviewer's queue). web.py holds what they share and the rules they follow."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fgalign.annotate import routes_auth, routes_items, routes_review
from fgalign.annotate.web import HERE, MAX_BODY, AnnotateApp, Problem, page

SECURITY_HEADERS = {
    # No inline script or style anywhere: data from the pairs file can never run, even if escaping failed.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the login link carries a secret
    "Cache-Control": "no-store",
}


def _error(request: Request, status: int, message: str) -> Response:
    """JSON for the API (the page's script reads `error`), a page for everything a browser opens."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return page(request, "message.html", status, title=str(status), message=message)


def create_app(db_path: str, secure_cookies: bool = False) -> FastAPI:
    app = FastAPI(title="fgalign annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.annotate = AnnotateApp(db_path, secure_cookies)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (routes_auth, routes_items, routes_review):
        app.include_router(module.router)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return _error(request, exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # e.g. /item/abc: an address that names no item is a missing page, not a JSON validation report
        return _error(request, 404, f"no such page: {request.url.path} (item numbers are whole numbers)")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return _error(request, exc.status_code, message)

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # noqa: ANN001
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"error": f"request too large (over {MAX_BODY // 1024} KiB)"}, status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return app
