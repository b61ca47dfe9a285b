"""The API builds each store once per process: the job queue and the interaction log are opened
(and their migrations run) at the first request that needs them, not per request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from store.db import Dialect, SQLiteDatabase
from store.feedback import FeedbackStore
from store.jobs import JobStore
from tests.service.modelkit import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each store's migrations ran (SQLite)."""
    runs: Counter[str] = Counter()
    real = SQLiteDatabase.migrate

    def counting(self: SQLiteDatabase, store: str, steps: Sequence[Mapping[Dialect, str]]) -> None:
        runs[store] += 1
        real(self, store, steps)

    monkeypatch.setattr(SQLiteDatabase, "migrate", counting)
    return runs


def test_each_store_is_built_once_across_requests(tmp_path: Path, migrations: Counter[str]) -> None:
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, fold_in=False)
    with TestClient(create_app(settings)) as c:
        assert migrations == Counter()  # nothing opened before a request needs it
        for n in range(3):
            body = {"interactions": [{"user_id": f"u{n}", "item_id": "i1"}]}
            r = c.post("/interactions", json=body, headers=AUTH)
            assert r.status_code == 200 and r.json() == {"accepted": 1, "total": n + 1}
        r = c.post("/retrain", json={"epochs": 1}, headers=AUTH)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert c.get(f"/retrain/{job_id}").json()["state"] == "queued"
        assert [j["job_id"] for j in c.get("/retrain").json()["jobs"]] == [job_id]
        assert c.post(f"/retrain/{job_id}/cancel", headers=AUTH).json()["state"] == "cancelled"
    assert migrations == Counter({"interactions": 1, "jobs": 1})
    # what the routes wrote is in the stores
    assert [row[0] for row in FeedbackStore(settings.feedback_db).rows()] == ["u0", "u1", "u2"]
    assert JobStore(settings.jobs_db).get(job_id).state == "cancelled"
