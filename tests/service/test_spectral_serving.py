"""A spectral-filter model served through every endpoint: answers against a dense numpy
GF-CF, exact fold-in, /similar from the filter's item-item scores, candidates, batches, hot
swap and the spectrum report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.modelkit import (
    ADMIN_TOKEN,
    SpectralModel,
    auth,
    make_model,
    make_spectral_model,
    publish,
    publish_spectral,
)


def ids_of(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


@pytest.fixture(params=[10, 0], ids=["lists", "no-lists"])
def served(request, tmp_path: Path):
    settings = Settings(
        home=tmp_path, admin_token=ADMIN_TOKEN, watch_interval_s=0.05, precompute_k=request.param
    )
    model = make_spectral_model(held_out=0.2)
    version = publish_spectral(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        yield c, model, version


def history(model: SpectralModel, user: int) -> np.ndarray:
    return np.flatnonzero(model.train[user])


def test_known_users_get_the_filter_top_k_without_anything_they_have(served) -> None:
    c, model, version = served
    for user in range(model.arrays.n_users):
        for k in (5, 12):  # 12 > the lists' 10: searched
            r = c.get(f"/recommend/u{user}?k={k}")
            assert r.status_code == 200, r.text
            body = r.json()
            want = model.ranked(history(model, user), model.seen[user], k)
            assert ids_of(body) == want
            # held-out pairs are in seen, never recommended
            assert not {f"i{s}" for s in model.seen[user]} & set(ids_of(body))
            scores = model.scores(history(model, user))
            np.testing.assert_allclose(
                [it["score"] for it in body["items"]],
                [scores[int(i[1:])] for i in want],
                rtol=1e-4,
                atol=1e-6,
            )
            assert body["source"] == "model" and body["model_version"] == version


def test_a_history_folds_in_exactly_like_the_trained_user(served) -> None:
    c, model, _ = served
    for user in (0, 3, 7):
        hist = history(model, user)
        trained = c.get(f"/recommend/u{user}?k=8&exclude_seen=false").json()
        folded = c.post(
            "/recommend",
            json={"history": [f"i{r}" for r in hist], "k": 8, "exclude_seen": False},
        ).json()["results"][0]
        assert folded["source"] == "fold-in"
        assert ids_of(folded) == ids_of(trained)
        np.testing.assert_allclose(
            [i["score"] for i in folded["items"]],
            [i["score"] for i in trained["items"]],
            rtol=1e-5,
        )


def test_users_known_only_through_ingestion_and_new_items_of_known_users(served) -> None:
    c, model, _ = served
    rows = [("newbie", "i1"), ("newbie", "i5"), ("u2", "i9"), ("u2", "i11")]
    r = c.post(
        "/interactions",
        json={"interactions": [{"user_id": u, "item_id": i} for u, i in rows]},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    body = c.get("/recommend/newbie?k=6").json()
    assert body["source"] == "fold-in"
    assert ids_of(body) == model.ranked([1, 5], [1, 5], 6)
    moved = c.get("/recommend/u2?k=6").json()
    hist = sorted(set(history(model, 2).tolist()) | {9, 11})
    assert moved["source"] == "fold-in"
    assert ids_of(moved) == model.ranked(hist, model.seen[2] | {9, 11}, 6)
    assert not {"i9", "i11"} & set(ids_of(moved))


def test_candidates_offset_exclude_and_batches(served) -> None:
    c, model, _ = served
    user = 4
    hist, seen = history(model, user), model.seen[user]
    full = model.ranked(hist, seen, 30)
    page = c.get(f"/recommend/u{user}?k=4&offset=4").json()
    assert ids_of(page) == full[4:8]
    ex = c.get(f"/recommend/u{user}?k=5&exclude={full[0]},{full[2]}").json()
    assert ids_of(ex) == model.ranked(hist, seen | {int(full[0][1:]), int(full[2][1:])}, 5)
    include = ["i0", "i3", "i7", "i11", "i20", "i29"]
    inc = c.get(f"/recommend/u{user}?k=10&include={','.join(include)}").json()
    assert ids_of(inc) == [i for i in full if i in include]
    batch = c.post("/recommend", json={"user_ids": ["u1", "u4", "nobody"], "k": 5}).json()
    got = batch["results"]
    assert ids_of(got[0]) == model.ranked(history(model, 1), model.seen[1], 5)
    assert ids_of(got[1]) == full[:5]
    assert got[2]["error"]["code"] == "unknown_user"


def test_similar_items_are_the_filters_item_item_scores(served) -> None:
    c, model, _ = served
    for item in (0, 6):
        r = c.get(f"/similar/i{item}?k=5")
        assert r.status_code == 200, r.text
        assert ids_of(r.json()) == model.ranked([item], [item], 5)
        user = 2
        with_user = c.get(f"/similar/i{item}?k=5&user_id=u{user}").json()
        assert ids_of(with_user) == model.ranked([item], model.seen[user] | {item}, 5)


def test_spectrum_reports_the_filter(served) -> None:
    c, model, _ = served
    body = c.get("/health/spectrum").json()
    filt = body["filter"]
    s = np.asarray(filt["singular_values"])
    assert len(s) == model.k and np.all(np.diff(s) <= 1e-6)
    np.testing.assert_allclose(filt["response"]["linear"], (s / s[0]) ** 2, rtol=1e-5)
    np.testing.assert_allclose(filt["response"]["total"], (s / s[0]) ** 2 + model.alpha, rtol=1e-5)
    assert c.get("/readyz").json()["index_kind"] == "filter"
    assert c.get("/health/spectrum?format=svg").status_code == 200


def test_hot_swap_between_an_embedding_and_a_spectral_model(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, watch_interval_s=0.05)
    publish(settings.registry_root, make_model(n_users=40, n_items=30))
    model = make_spectral_model()
    with TestClient(create_app(settings)) as c:
        first = c.get("/recommend/u0?k=5").json()["model_version"]
        version = publish_spectral(settings.registry_root, model)
        import time

        deadline = time.monotonic() + 10
        while c.get("/recommend/u0?k=5").json()["model_version"] == first:
            assert time.monotonic() < deadline, "no swap"
            time.sleep(0.05)
        body = c.get("/recommend/u0?k=5").json()
        assert body["model_version"] == version
        assert ids_of(body) == model.ranked(history(model, 0), model.seen[0], 5)
        listed = c.get("/models").json()
        assert any(v.get("version") == version for v in listed["versions"])
