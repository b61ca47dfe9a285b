"""The HTML the API serves (GET /, /docs, /redoc) names no outside URL, its assets are served
by the API itself, and none of it is an operation of the OpenAPI document.

The browser tests (tests/browser) render the same pages in Chromium with the network cut off;
these checks need no browser."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.routes import dashboard, docs
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PAGES = ("/", "/docs", "/redoc", "/docs/oauth2-redirect")
SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name in dashboard.js, never fetched


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from service.app import create_app

    home = tmp_path_factory.mktemp("home")  # no model: the pages are served all the same
    return TestClient(create_app(Settings(home=home, watch=False, admin_token=None)))


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("path", PAGES)
def test_pages_name_no_outside_url(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "://" not in r.text, re.findall(r"\S*://\S*", r.text)
    for url in _asset_urls(r.text):
        assert not url.startswith("//"), url  # no scheme-relative //host/... either


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_every_asset_a_page_names_is_served_by_the_api(client: TestClient, path: str) -> None:
    html = client.get(path).text
    urls = [u for u in _asset_urls(html) if not u.startswith("data:")]
    scripts = re.findall(r"""<script[^>]*\bsrc=["']([^"']+)""", html)
    assert scripts, f"{path} loads no script?"
    for url in urls:
        absolute = url if url.startswith("/") else "/" + url  # relative to / (the page's dir)
        if absolute in PAGES:  # the dashboard's links to /docs, /redoc
            continue
        r = client.get(absolute)
        assert r.status_code == 200, (path, url, r.status_code)
        assert r.headers["content-type"].split(";")[0] in (
            "text/javascript",
            "text/css",
            "image/png",
            "text/plain",  # /metrics, linked from the dashboard
        ), (url, r.headers["content-type"])


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_allow_their_own_origin_only(client: TestClient, path: str) -> None:
    csp = client.get(path).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        sources = set(directives[name].split())
        assert sources <= {"'self'", "'unsafe-inline'", "data:"}, (name, sources)


def test_dashboard_script_and_style_name_no_outside_url(client: TestClient) -> None:
    for name in ("dashboard.js", "dashboard.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        text = r.text.replace(SVG_NS, "")
        assert "://" not in text, (name, re.findall(r"\S*://\S*", text))
        assert "@import" not in text and "url(" not in text.replace('url("data:', "")


def test_the_admin_token_is_kept_in_session_storage_only() -> None:
    js = (dashboard.STATIC_DIR / "dashboard.js").read_text()
    assert "sessionStorage" in js
    assert "localStorage" not in js and "document.cookie" not in js
    assert 'credentials: "omit"' in js  # no cookie is ever sent with an API call
    assert "Authorization" in js and "Bearer" in js


def test_docs_assets_come_from_the_installed_package(client: TestClient) -> None:
    for name, kind in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "text/javascript"),
    ):
        assert (docs.ASSETS_DIR / name).is_file()
        r = client.get(f"{docs.ASSETS_URL}/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert len(r.content) > 100_000  # the real bundle, not a stub
    swagger = client.get("/docs").text
    assert f"{docs.ASSETS_URL}/swagger-ui-bundle.js" in swagger
    assert '"validatorUrl": null' in swagger  # no badge from validator.swagger.io


def test_root_and_static_are_not_api_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/", "/docs", "/redoc", "/static", docs.OAUTH2_REDIRECT_URL):
        assert not any(p == path or p.startswith("/static") for p in paths), path


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/docs/nope.js", "/static/../app.py", "/static/%2e%2e/app.py"],
)
def test_missing_static_files_are_json_404s(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_every_static_file_is_package_data() -> None:
    """Installed from a wheel (the Docker image), GET / needs its files in the package."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["service"]
    files = [p.relative_to(REPO / "service").as_posix() for p in dashboard.STATIC_DIR.rglob("*")]
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f"service/{f} is not package data"
    assert {"static/dashboard.html", "static/dashboard.js", "static/dashboard.css"} <= set(files)
