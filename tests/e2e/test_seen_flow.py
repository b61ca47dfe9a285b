"""Known interactions are never recommended, end to end.

The worker's first-run bootstrap trains and publishes the default model (refit on every pair,
the default) on a small generated default dataset; the real app answers. For a few users,
no item of their rows of ``interactions.csv`` (training AND held-out pairs) comes back in
k = 100 answers of GET and POST /recommend, a history fold-in of those rows, or /similar with
their user_id; items they are ingested with afterwards are left out the same way, never
answered from a precomputed list that holds them.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from service.app import create_app
from service.settings import Settings
from trainer.data import load_dataset
from trainer.synthetic import write_dataset
from worker.bootstrap import bootstrap
from worker.settings import WorkerSettings

TOKEN = "e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = ("user_0", "user_1", "user_7", "user_42", "user_299")
K = 100


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose default model the worker's bootstrap published (300 users x 200 items)."""
    home = tmp_path_factory.mktemp("home")
    write_dataset(home / "data" / "default", n_users=300, n_items=200)
    settings = WorkerSettings(home=home)
    assert bootstrap(settings) is not None
    return home


@pytest.fixture
def home(bootstrapped: Path, tmp_path: Path) -> Path:
    """A copy of the bootstrapped home: a test's ingested rows stay its own."""
    shutil.copytree(bootstrapped, tmp_path / "home")
    return tmp_path / "home"


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    settings = Settings(home=home, admin_token=TOKEN, watch_interval_s=0.05)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 200
        yield c


def file_rows(home: Path) -> dict[str, set[str]]:
    """user_id -> item ids of that user's rows in the default interactions file."""
    rows: dict[str, set[str]] = defaultdict(set)
    with open(home / "data" / "default" / "interactions.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["user_id"]].add(row["item_id"])
    return rows


def items(answer: dict) -> list[str]:
    return [it["item_id"] for it in answer["items"]]


def test_the_bootstrap_publishes_a_refit_whose_seen_set_is_every_row(home: Path) -> None:
    model = ModelRegistry(home / "models").load()
    ds = load_dataset(home / "data" / "default")
    assert ds.n_test > 0
    trained_on = model.manifest.to_dict()["trained_on"]
    assert trained_on["pairs"] == "all"
    assert trained_on["evaluated_on"] == {"train_pairs": ds.n_train, "test_pairs": ds.n_test}
    assert model.manifest.to_dict()["metrics"]["n_users"] == 300  # the split run's metrics
    rows = file_rows(home)
    a = model.arrays
    for u, user_id in enumerate(a.user_ids.tolist()):
        assert set(a.item_ids[a.seen(u)].tolist()) == rows[user_id]


def test_no_row_of_the_interactions_file_is_recommended(home: Path, client: TestClient) -> None:
    rows = file_rows(home)
    ds = load_dataset(home / "data" / "default")
    held_out = {
        ds.user_ids[u]: set() for u in range(ds.n_users)
    }  # the pairs that used to count as unseen
    for u, i in zip(ds.test_users.tolist(), ds.test_items.tolist(), strict=True):
        held_out[ds.user_ids[u]].add(ds.item_ids[i])
    leaked_before = 0
    for user in USERS:
        known = rows[user]
        assert held_out[user] and held_out[user] <= known
        r = client.get(f"/recommend/{user}?k={K}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "model" and len(body["items"]) == K
        assert not set(items(body)) & known, user
        # without the exclusion the model ranks held-out rows in its top 100: the exclusion
        # is what keeps them out
        everything = client.get(f"/recommend/{user}?k={K}&exclude_seen=false").json()
        leaked_before += len(set(items(everything)) & held_out[user])

        r = client.post("/recommend", json={"history": sorted(known), "k": K})
        assert r.status_code == 200, r.text
        (entry,) = r.json()["results"]
        assert entry["source"] == "fold-in" and len(entry["items"]) == K
        assert not set(items(entry)) & known, user

        some_item = sorted(known)[0]
        r = client.get(f"/similar/{some_item}?k={K}&user_id={user}")
        assert r.status_code == 200, r.text
        similar = items(r.json())
        assert len(similar) == K and some_item not in similar
        assert not set(similar) & known, user
    assert leaked_before > 0

    r = client.post("/recommend", json={"user_ids": list(USERS), "k": K})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [e["user_id"] for e in results] == list(USERS)
    for entry in results:
        assert entry["error"] is None and len(entry["items"]) == K
        assert not set(items(entry)) & rows[entry["user_id"]], entry["user_id"]


def test_ingested_items_are_left_out_everywhere(home: Path, client: TestClient) -> None:
    """A known user ingests the top 5 of their own precomputed list: every answer leaves them
    out (fold-in, never that stale list), as it leaves out the file's rows."""
    rows = file_rows(home)
    user = USERS[0]
    before = items(client.get(f"/recommend/{user}?k={K}").json())
    fresh = before[:5]
    ingest = [{"user_id": user, "item_id": i} for i in fresh]
    r = client.post("/interactions", json={"interactions": ingest}, headers=AUTH)
    assert r.status_code == 200, r.text
    known = rows[user] | set(fresh)

    body = client.get(f"/recommend/{user}?k={K}").json()
    assert body["source"] == "fold-in" and len(body["items"]) == K
    assert not set(items(body)) & known

    r = client.post("/recommend", json={"user_ids": [user, USERS[1]], "k": K})
    mine, other = r.json()["results"]
    assert mine["source"] == "fold-in" and not set(items(mine)) & known
    assert other["source"] == "model" and not set(items(other)) & rows[USERS[1]]

    similar = items(client.get(f"/similar/{fresh[0]}?k={K}&user_id={user}").json())
    assert len(similar) == K and not set(similar) & known

    # a user the model never saw, known only by ingested rows
    ingest = [{"user_id": "newcomer", "item_id": i} for i in before[:8]]
    assert client.post("/interactions", json={"interactions": ingest}, headers=AUTH).is_success
    body = client.get(f"/recommend/newcomer?k={K}").json()
    assert body["source"] == "fold-in" and len(body["items"]) == K
    assert not set(items(body)) & set(before[:8])
    similar = items(client.get(f"/similar/{before[20]}?k={K}&user_id=newcomer").json())
    assert len(similar) == K and not set(similar) & set(before[:8])
