"""GET /: the operator's page, served by the API itself (service/static/, no build step).

The page is plain HTML + vanilla JavaScript + CSS; it reads the same JSON API a script would
(/readyz, /models, /health/spectrum, /retrain, /metrics) and sends admin calls with the token
the operator typed, kept in the tab's sessionStorage. Its Content-Security-Policy allows this
origin only: the browser itself refuses any script, style, image or request from elsewhere.

Neither ``/`` nor ``/static`` is an API operation: both stay out of the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
"""dashboard.html, dashboard.js, dashboard.css (package data of ``service``)."""
STATIC_URL = "/static"
PAGE = STATIC_DIR / "dashboard.html"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def install(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/static`` (its script and stylesheet).

    Mount it after ``service.routes.docs.install``: ``/static/docs`` must match first.
    """
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)
