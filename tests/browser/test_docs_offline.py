"""/docs (Swagger UI) and /redoc (ReDoc) render in Chromium with no network but loopback.

The page fixture aborts every request that is not addressed to 127.0.0.1 and fails the test
if there was one; these tests also check that the assets really came from the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.browser.conftest import Guard, Server


def _operations(server: Server) -> list[tuple[str, str]]:
    paths = server.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _only_loopback(guard: Guard, server: Server) -> None:
    assert guard.blocked == [], guard.blocked
    fetched = [u for u in guard.seen if urlsplit(u).scheme in ("http", "https")]
    assert fetched and all(u.startswith(server.base + "/") for u in fetched), fetched


def test_swagger_ui_lists_every_operation_offline(
    page: Any, server: Server, guard: Guard, expect: Any
) -> None:
    operations = _operations(server)
    page.goto("/docs")
    blocks = page.locator(".opblock")
    expect(blocks.first).to_be_visible()
    expect(blocks).to_have_count(len(operations))
    for method, path in operations:
        block = page.locator(f".opblock-{method.lower()}").filter(
            has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
        )
        expect(block).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("specrec")
    # one operation opens (its parameters are rendered from the document)
    page.locator('.opblock-summary-path[data-path="/recommend/{user_id}"]').click()
    expect(page.locator(".opblock.is-open .parameters")).to_contain_text("exclude_seen")
    _only_loopback(guard, server)
    assert any(u.endswith("/static/docs/swagger-ui-bundle.js") for u in guard.seen)
    assert any(u.endswith("/static/docs/swagger-ui.css") for u in guard.seen)
    assert any(u.endswith("/openapi.json") for u in guard.seen)


def test_redoc_renders_the_operations_offline(
    page: Any, server: Server, guard: Guard, expect: Any
) -> None:
    page.goto("/redoc")
    expect(page.get_by_role("heading", name="Top-k items for one user")).to_be_visible()
    expect(page.get_by_role("heading", name="Queue a retraining job (admin)")).to_be_visible()
    _only_loopback(guard, server)
    assert any(u.endswith("/static/docs/redoc.standalone.js") for u in guard.seen)
