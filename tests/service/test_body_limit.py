"""Request bodies above SPECREC_MAX_BODY_BYTES: 413 with the JSON error body, before being read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.body_limit import BodyLimitMiddleware
from service.settings import Settings
from store.feedback import FeedbackStore
from tests.service.modelkit import auth

LIMIT = 4096
ROUTES = {
    "/interactions": {"interactions": [{"user_id": "u1", "item_id": "i1", "timestamp": 5}]},
    "/recommend": {"user_ids": ["u1"], "k": 3},
}


@pytest.fixture
def api(settings: Settings, published: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": LIMIT}))) as c:
        yield c


def padded(body: dict, size: int) -> bytes:
    """``body`` as JSON of exactly ``size`` bytes (trailing spaces are valid JSON)."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, without Content-Length."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def assert_413(r) -> None:
    assert r.status_code == 413, r.text
    assert r.json() == {
        "error": {
            "code": "payload_too_large",
            "message": f"request body larger than {LIMIT} bytes (SPECREC_MAX_BODY_BYTES)",
        }
    }


def stored(api: TestClient) -> int:
    return len(FeedbackStore(api.app.state.ctx.settings.feedback_db).rows())


@pytest.mark.parametrize("path", ROUTES)
def test_content_length_over_the_limit_is_413(api: TestClient, path: str) -> None:
    body = padded(ROUTES[path], LIMIT + 1)
    r = api.post(path, content=body, headers={**auth(), "Content-Type": "application/json"})
    assert_413(r)
    assert r.headers["connection"] == "close"
    assert stored(api) == 0


@pytest.mark.parametrize("path", ROUTES)
def test_chunked_body_over_the_limit_is_413(api: TestClient, path: str) -> None:
    body = chunks(padded(ROUTES[path], LIMIT + 1))
    r = api.post(path, content=body, headers={**auth(), "Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_413(r)
    assert stored(api) == 0


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("streamed", [False, True])
def test_body_at_the_limit_is_handled(api: TestClient, path: str, streamed: bool) -> None:
    body = padded(ROUTES[path], LIMIT)
    content = chunks(body) if streamed else body
    r = api.post(path, content=content, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    if path == "/interactions":
        assert r.json() == {"accepted": 1, "total": 1}
    else:
        assert [x["user_id"] for x in r.json()["results"]] == ["u1"]


def test_row_limits_still_answer_their_own_413(settings: Settings) -> None:
    s = settings.model_copy(update={"max_body_bytes": LIMIT, "max_ingest_batch": 2})
    rows = [{"user_id": f"u{i}", "item_id": "i"} for i in range(3)]
    with TestClient(create_app(s)) as c:
        r = c.post("/interactions", json={"interactions": rows}, headers=auth())
    assert r.status_code == 413 and r.json()["error"]["code"] == "batch_too_large"


def test_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert Settings(home=tmp_path).max_body_bytes == 16 * 1024 * 1024
    monkeypatch.setenv("SPECREC_MAX_BODY_BYTES", "1234")
    assert Settings(home=tmp_path).max_body_bytes == 1234


def test_streamed_body_is_not_read_past_the_limit() -> None:
    """The middleware stops at the first chunk beyond the limit; the rest is never received."""
    received: list[int] = []
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:  # reads the whole body, like a handler would
        while (await receive()).get("more_body"):
            pass

    async def receive() -> dict:
        received.append(len(received))
        return {"type": "http.request", "body": b"x" * 1000, "more_body": len(received) < 100}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=2500)(scope, receive, send))
    assert len(received) == 3  # 3000 bytes > 2500: no fourth chunk
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
