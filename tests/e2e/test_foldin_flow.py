"""Fold-in end to end: a model trained by the real trainer on the synthetic default, the real
app; a brand-new user posts interactions and, with no retrain, GET /recommend/{user} answers
from them (``source: fold-in``), leaves them out, and ranks items of the same planted
cluster (the generator's ground truth for "close") first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from contract.config import default_synthetic_config
from service.app import create_app
from service.settings import Settings
from trainer.data import load_dataset
from trainer.synthetic import generate, write_dataset
from trainer.train import fit, publish_result

TOKEN = "e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_new_user_is_answered_from_their_interactions_without_a_retrain(tmp_path: Path) -> None:
    data = tmp_path / "data" / "default"
    write_dataset(data)
    ds = load_dataset(data)
    cfg = default_synthetic_config(epochs=4, eval_every=4)  # MF-DirectSpec+
    result = fit(ds, cfg, progress_bar=False)
    settings = Settings(home=tmp_path, admin_token=TOKEN, watch_interval_s=0.05)
    publish_result(result, ds, cfg, ModelRegistry(settings.registry_root))
    truth = generate()  # row r is item_{r} / user_{r}: the planted clusters and interests
    cluster = truth.item_cluster
    target = int(np.bincount(cluster).argmax())
    # trained users who care about that cluster only; the new user has the first one's items
    devoted = np.flatnonzero(truth.user_interest[:, target] > 0.95)[:20]
    twin = ds.user_ids.tolist().index(f"user_{devoted[0]}")
    history = ds.item_ids[ds.train_items[ds.train_users == twin]].tolist()

    with TestClient(create_app(settings)) as c:
        assert c.get("/recommend/brand-new?k=20").status_code == 404
        rows = [{"user_id": "brand-new", "item_id": i} for i in history]
        r = c.post("/interactions", json={"interactions": rows}, headers=AUTH)
        assert r.status_code == 200, r.text
        r = c.get("/recommend/brand-new?k=20")
        assert r.status_code == 200, r.text
        body = r.json()
        got = [it["item_id"] for it in body["items"]]
        popular = [
            it["item_id"]
            for it in c.get("/recommend/brand-new-2?k=20&fallback=popular").json()["items"]
        ]
        # how often the devoted users' own (trained) lists hit their cluster
        trained_share = np.mean(
            [
                cluster[int(it["item_id"].removeprefix("item_"))] == target
                for u in devoted
                for it in c.get(f"/recommend/user_{u}?k=20").json()["items"]
            ]
        )
    assert body["source"] == "fold-in" and len(got) == 20
    assert not set(got) & set(history)
    same = [cluster[int(i.removeprefix("item_"))] == target for i in got]
    same_popular = [cluster[int(i.removeprefix("item_"))] == target for i in popular]
    # measured: 20 of 20 vs 0.75 for the devoted users' own lists and 1 of 20 for popular
    assert all(same[:10]) and np.mean(same) >= max(trained_share, 5 * np.mean(same_popular)), (
        same,
        trained_share,
        same_popular,
    )
