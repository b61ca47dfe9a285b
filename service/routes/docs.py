"""/docs (Swagger UI) and /redoc (ReDoc) with their JavaScript and CSS served by the API itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet. The assets here come from the ``fastapi-offline`` package (a declared
dependency: Swagger UI 5 ``swagger-ui-bundle.js`` + ``swagger-ui.css``, ReDoc 2
``redoc.standalone.js``), mounted at ``/static/docs``; the pages are FastAPI's own
(``get_swagger_ui_html``, ``get_redoc_html``) pointed at them. No served page names an outside
URL: no Google Fonts, no CDN favicon, and Swagger UI's online validator badge is off.

ReDoc's bundle itself still shows a "by Redocly" logo from cdn.redoc.ly in its sidebar (no
option turns it off). Both pages are therefore sent with a Content-Security-Policy that allows
this origin only: the browser never requests that logo (ReDoc then leaves it out), nor anything
else from outside.

Create the app with ``docs_url=None, redoc_url=None`` and call ``install(app)``.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
"""swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png."""
ASSETS_URL = "/static/docs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

#: Same-origin only. The inline script is FastAPI's Swagger UI initialiser; inline styles are
#: ReDoc's (styled-components) and Swagger UI's; ReDoc's search runs in a blob: worker.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install(app: FastAPI) -> None:
    """Mount the assets and add the two pages (not in the OpenAPI document, like FastAPI's)."""
    if app.docs_url or app.redoc_url:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            # no badge image from the online validator (validator.swagger.io)
            swagger_ui_parameters={"validatorUrl": None},
        )
        return _same_origin_only(page)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _same_origin_only(page)
