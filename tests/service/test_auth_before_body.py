"""Admin routes check the token before they read the body (service.auth.guard_before_body).

Driven at the ASGI level: the app's ``receive`` records every call, so "refused before reading"
is observed, not inferred. A request with the right token reads its body (the probe works).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from store.feedback import FeedbackStore
from tests.service.modelkit import ADMIN_TOKEN, auth, make_model, publish

INGEST = "ingest-only-token-123"
JUNK = b'{"interactions": [{"user_id": ' + b"x" * 4096  # not JSON: cut off
JOB = "0" * 32
ADMIN_POSTS = [
    "/interactions",
    "/retrain",
    f"/retrain/{JOB}/cancel",
    "/models/v1/activate",
]
UNAUTHORIZED = {
    "error": {
        "code": "unauthorized",
        "message": "missing or malformed 'Authorization: Bearer <token>'",
    }
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    receives: int = 0
    """How many times the app called ``receive``."""
    sent: list[bytes] = field(default_factory=list)


def call(app: FastAPI, path: str, headers: dict[str, str], chunks: list[bytes]) -> Answer:
    """One POST through the whole ASGI app; the body arrives in ``chunks`` on demand."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    answer = Answer(0, {}, None)
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        answer.receives += 1
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.sent.append(message.get("body", b""))

    asyncio.run(app(scope, receive, send))
    answer.body = json.loads(b"".join(answer.sent))
    return answer


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, ingest_token=INGEST)
    publish(settings.registry_root, make_model())
    return create_app(settings)


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_no_token_is_401_before_the_body_is_read(app: FastAPI, path: str) -> None:
    answer = call(app, path, {}, [JUNK, JUNK])
    assert (answer.status, answer.body) == (401, UNAUTHORIZED)
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.headers["content-type"] == "application/json"
    assert answer.receives == 0


@pytest.mark.parametrize("path", ADMIN_POSTS)
@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer "])
def test_a_wrong_or_malformed_token_is_refused_before_the_body(
    app: FastAPI, path: str, header: str
) -> None:
    answer = call(app, path, {"Authorization": header}, [JUNK])
    expected = 403 if header == "Bearer wrong-token" else 401
    assert answer.status == expected, answer.body
    assert answer.body["error"]["code"] == ("forbidden" if expected == 403 else "unauthorized")
    assert answer.receives == 0


def test_the_ingest_token_opens_interactions_only(app: FastAPI) -> None:
    ingest = {"Authorization": f"Bearer {INGEST}"}
    answer = call(app, "/retrain", ingest, [b"{}"])
    assert (answer.status, answer.body["error"]["message"]) == (403, "wrong admin token")
    assert answer.receives == 0
    answer = call(app, "/interactions", ingest, [b'{"interactions": [{"user_id"', b': "u", '])
    assert answer.status == 422 and answer.body["error"]["details"][0]["type"] == "json_invalid"
    assert answer.receives == 2  # the body was read: the probe sees reads


def test_with_the_token_the_body_is_read_and_judged(app: FastAPI) -> None:
    answer = call(app, "/interactions", auth(), [JUNK])
    assert answer.status == 422 and answer.body["error"]["details"][0]["type"] == "json_invalid"
    assert answer.receives >= 1
    rows = b'{"interactions": [{"user_id": "u1", "item_id": "i1", "timestamp": 5}]}'
    answer = call(app, "/interactions", auth(), [rows[:20], rows[20:]])
    assert (answer.status, answer.body) == (200, {"accepted": 1, "total": 1})
    assert answer.receives == 2
    assert FeedbackStore(app.state.ctx.settings.feedback_db).rows() == [("u1", "i1", 5.0)]


def test_admin_disabled_is_503_before_the_body(tmp_path) -> None:
    app = create_app(Settings(home=tmp_path))
    for path in ADMIN_POSTS:
        answer = call(app, path, auth(), [JUNK])
        assert (answer.status, answer.body["error"]["code"]) == (503, "admin_disabled")
        assert answer.receives == 0


def test_junk_without_a_token_is_401_through_the_test_client(client: TestClient) -> None:
    for path in ADMIN_POSTS:
        r = client.post(path, content=JUNK, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), path
        r = client.post(path, content=JUNK, headers={"Authorization": "Bearer no"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
    assert client.get("/retrain").json() == {"jobs": []}
    assert ADMIN_TOKEN not in json.dumps(client.get("/openapi.json").json())
