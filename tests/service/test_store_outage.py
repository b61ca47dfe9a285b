"""PostgreSQL unreachable while the API runs: recommendations keep being answered from the model,
store endpoints answer 503 ``store_unavailable`` (JSON, nothing changed), and fold-in follows the
store again once it answers. A real outage: a database that does not exist yet, then is created."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.fresh
from service.app import create_app
from service.settings import Settings
from store import db as store_db
from tests.service.modelkit import ADMIN_TOKEN, auth, make_model, publish


@pytest.fixture
def outage(tmp_path: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, str]:
    """Settings pointing at a database that is not there (yet); its name."""
    monkeypatch.setattr(store_db, "POOL_TIMEOUT_S", 1.0)
    monkeypatch.setattr(service.fresh, "RETRY_S", 0.2)
    name = "t_outage_" + tmp_path.name.replace("-", "_")[-20:].lower()
    settings = Settings(
        home=tmp_path,
        admin_token=ADMIN_TOKEN,
        watch_interval_s=0.05,
        database_url=postgres.url(name),
    )
    publish(settings.registry_root, make_model())
    return settings, name


def test_store_endpoints_answer_503_and_recommendations_go_on(outage) -> None:
    settings, _ = outage
    with TestClient(create_app(settings)) as c:
        r = c.get("/recommend/u1?k=5")
        assert r.status_code == 200 and len(r.json()["items"]) == 5
        t0 = time.monotonic()
        r = c.post(
            "/interactions",
            json={"interactions": [{"user_id": "u1", "item_id": "i3"}]},
            headers=auth(),
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert "nothing was changed" in r.json()["error"]["message"]
        assert r.headers["Retry-After"] == "5"
        assert time.monotonic() - t0 < 10  # the pool's timeout, not a hang
        r = c.post("/retrain", json={"epochs": 1}, headers=auth())
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert c.get("/recommend/u2?k=5").status_code == 200


def test_fold_in_follows_the_store_again_once_it_answers(outage, postgres) -> None:
    settings, name = outage
    with TestClient(create_app(settings)) as c:
        assert c.get("/recommend/newcomer?k=5").status_code == 404  # unknown, store down
        import psycopg

        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        body = {"interactions": [{"user_id": "newcomer", "item_id": "i3"}]}
        deadline = time.monotonic() + 20
        while (r := c.post("/interactions", json=body, headers=auth())).status_code == 503:
            assert time.monotonic() < deadline, r.text  # the pool reconnects by itself
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while (r := c.get("/recommend/newcomer?k=5")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.json()["source"] == "fold-in"
        assert "i3" not in [x["item_id"] for x in r.json()["items"]]
