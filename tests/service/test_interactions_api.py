"""POST /interactions: auth, all-or-nothing validation with row indices, size limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from store.feedback import FeedbackStore
from tests.service.modelkit import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INGEST = "ingest-only-token-123"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    s = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, ingest_token=INGEST, max_ingest_batch=5)
    with TestClient(create_app(s)) as c:
        yield c


def stored(api: TestClient) -> list[tuple[str, str, float]]:
    return FeedbackStore(api.app.state.ctx.settings.feedback_db).rows()


def test_ingest_with_admin_or_ingest_token(api: TestClient) -> None:
    body = {"interactions": [{"user_id": "new_user", "item_id": "item_1", "timestamp": 100}]}
    assert api.post("/interactions", json=body).status_code == 401
    r = api.post("/interactions", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = api.post("/interactions", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"accepted": 1, "total": 1}
    r = api.post(
        "/interactions",
        json={"interactions": [{"user_id": "new_user", "item_id": "item_2"}]},
        headers={"Authorization": f"Bearer {INGEST}"},
    )
    assert r.json() == {"accepted": 1, "total": 2}
    rows = stored(api)
    assert rows[0] == ("new_user", "item_1", 100.0)
    assert rows[1][:2] == ("new_user", "item_2") and rows[1][2] > 1.6e9  # ingestion time


def test_bad_rows_reject_the_batch_with_indices(api: TestClient) -> None:
    api.post(
        "/interactions", json={"interactions": [{"user_id": "u", "item_id": "i"}]}, headers=AUTH
    )
    rows = [
        {"user_id": "ok", "item_id": "fine"},
        {"user_id": "bad\tid", "item_id": "x"},
        {"user_id": "u"},
        {"user_id": "u", "item_id": "i", "rating": 5},
        {"user_id": "u", "item_id": "i", "timestamp": "yesterday"},
        "not an object",
    ]
    r = api.post("/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 413  # 6 rows > max 5: the size check comes first
    r = api.post("/interactions", json={"interactions": rows[:5]}, headers=AUTH)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert err["message"].startswith("row 1: user_id 'bad\\tid' is not a valid id")
    assert "nothing was stored" in err["message"]
    assert [d["index"] for d in err["details"]] == [1, 2, 3, 4]
    assert "missing field(s) ['item_id']" in err["details"][1]["reason"]
    assert "unknown field(s) ['rating']" in err["details"][2]["reason"]
    assert "timestamp 'yesterday'" in err["details"][3]["reason"]
    r = api.post("/interactions", json={"interactions": ["x"]}, headers=AUTH)
    assert r.json()["error"]["details"] == [{"index": 0, "reason": "expected an object, got str"}]
    assert [row[:2] for row in stored(api)] == [("u", "i")]  # only the first, good batch


def test_oversized_batch_is_413_and_stores_nothing(api: TestClient) -> None:
    rows = [{"user_id": f"u{i}", "item_id": "i"} for i in range(6)]
    r = api.post("/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "batch_too_large"
    assert r.json()["error"]["details"] == {"rows": 6, "max_rows": 5}
    assert stored(api) == []


@pytest.mark.parametrize(
    "body",
    [{"interactions": []}, {"rows": []}, {"interactions": [], "extra": 1}, [1, 2], "text"],
)
def test_malformed_bodies_are_422(api: TestClient, body: object) -> None:
    r = api.post("/interactions", json=body, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert stored(api) == []


def test_invalid_json_is_422(api: TestClient) -> None:
    r = api.post(
        "/interactions", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
