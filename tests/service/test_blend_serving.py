"""A blend (DirectSpec+ and the spectral filter) served through every endpoint: answers
against a dense numpy reference z(GF-CF) + β·z(u·V), fold-in moving both parts, /similar,
candidates, batches and the spectrum report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from service.app import create_app
from service.foldin import FoldIn, rule_for
from service.settings import Settings
from tests.service.modelkit import ADMIN_TOKEN, auth, make_blend_model, publish_blend


def ids_of(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


@pytest.fixture(params=[10, 0], ids=["lists", "no-lists"])
def served(request, tmp_path: Path):
    settings = Settings(
        home=tmp_path, admin_token=ADMIN_TOKEN, watch_interval_s=0.05, precompute_k=request.param
    )
    model = make_blend_model(held_out=0.2)
    version = publish_blend(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        yield c, model, version


def foldin_vector(model, history: list[int]) -> np.ndarray:
    """The embedding part's fold-in of a history, as the service computes it for MF."""
    a = model.arrays
    fold = FoldIn.fit(a.item_emb, a.user_emb, a.seen_indptr, a.seen_indices, rule_for("mf"))
    return fold.vector(np.asarray(history, dtype=np.int64))


def test_known_users_get_the_blend_top_k(served) -> None:
    c, model, version = served
    for user in range(model.arrays.n_users):
        hist, vec = model.history(user), model.user_emb[user]
        for k in (5, 12):  # 12 > the lists' 10: searched
            r = c.get(f"/recommend/u{user}?k={k}")
            assert r.status_code == 200, r.text
            body = r.json()
            want = model.ranked(hist, vec, model.seen[user], k)
            assert ids_of(body) == want
            scores = model.scores(hist, vec)
            np.testing.assert_allclose(
                [it["score"] for it in body["items"]],
                [scores[int(i[1:])] for i in want],
                rtol=1e-4,
                atol=1e-5,
            )
            assert body["source"] == "model" and body["model_version"] == version


def test_the_blend_differs_from_either_part(served) -> None:
    """The weight matters: the blend's answers are neither the filter's nor the vectors'."""
    c, model, _ = served
    differs_filter = differs_vectors = 0
    for user in range(model.arrays.n_users):
        got = ids_of(c.get(f"/recommend/u{user}?k=5").json())
        hist, vec = model.history(user), model.user_emb[user]
        differs_filter += got != model.spectral.ranked(hist, model.seen[user], 5)
        emb = model.item_emb @ vec
        order = [r for r in np.argsort(-emb, kind="stable") if r not in model.seen[user]][:5]
        differs_vectors += got != [f"i{r}" for r in order]
    assert differs_filter > 0 and differs_vectors > 0


def test_a_history_folds_in_both_parts(served) -> None:
    c, model, _ = served
    hist = [1, 4, 9]
    body = c.post(
        "/recommend", json={"history": [f"i{r}" for r in hist], "k": 6, "exclude_seen": True}
    ).json()["results"][0]
    assert body["source"] == "fold-in"
    assert ids_of(body) == model.ranked(hist, foldin_vector(model, hist), set(hist), 6)


def test_users_known_only_through_ingestion(served) -> None:
    c, model, _ = served
    rows = [("newbie", "i1"), ("newbie", "i5")]
    r = c.post(
        "/interactions",
        json={"interactions": [{"user_id": u, "item_id": i} for u, i in rows]},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    body = c.get("/recommend/newbie?k=6").json()
    assert body["source"] == "fold-in"
    assert ids_of(body) == model.ranked([1, 5], foldin_vector(model, [1, 5]), {1, 5}, 6)


def test_candidates_offset_exclude_and_batches(served) -> None:
    c, model, _ = served
    user = 4
    hist, vec, seen = model.history(user), model.user_emb[user], model.seen[user]
    full = model.ranked(hist, vec, seen, 30)
    assert ids_of(c.get(f"/recommend/u{user}?k=4&offset=4").json()) == full[4:8]
    ex = c.get(f"/recommend/u{user}?k=5&exclude={full[0]},{full[2]}").json()
    banned = seen | {int(full[0][1:]), int(full[2][1:])}
    assert ids_of(ex) == model.ranked(hist, vec, banned, 5)
    include = ["i0", "i3", "i7", "i11", "i20", "i29"]
    inc = c.get(f"/recommend/u{user}?k=10&include={','.join(include)}").json()
    assert ids_of(inc) == [i for i in full if i in include]
    got = c.post("/recommend", json={"user_ids": ["u1", "u4", "nobody"], "k": 5}).json()
    results = got["results"]
    assert ids_of(results[0]) == model.ranked(model.history(1), model.user_emb[1], model.seen[1], 5)
    assert ids_of(results[1]) == full[:5]
    assert results[2]["error"]["code"] == "unknown_user"


def test_similar_items_blend_both_item_similarities(served) -> None:
    c, model, _ = served
    for item in (0, 6):
        r = c.get(f"/similar/i{item}?k=5")
        assert r.status_code == 200, r.text
        assert ids_of(r.json()) == model.ranked([item], model.item_emb[item], {item}, 5)


def test_spectrum_and_readiness_name_the_blend(served) -> None:
    c, model, version = served
    body = c.get("/health/spectrum").json()
    assert body["filter"]["blend_weight"] == pytest.approx(model.weight)
    assert len(body["filter"]["singular_values"]) == model.spectral.k
    assert body["users"]["dim"] == model.user_emb.shape[1]  # the embedding part's spectrum
    assert c.get("/readyz").json()["index_kind"] == "blend"
    listed = c.get("/models").json()
    mine = [v for v in listed["versions"] if v.get("version") == version]
    assert mine and mine[0]["model"]["kind"] == "blend"


def test_a_blend_manifest_without_its_weight_is_not_served(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, watch_interval_s=0.05)
    model = make_blend_model()
    ModelRegistry(settings.registry_root).publish(
        model.arrays,
        config={"objective": "blend"},
        extra={"model": {"kind": "blend", "spectral_k": model.spectral.k, "spectral_alpha": 0.3}},
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/recommend/u0?k=5")
        assert r.status_code == 503, r.text
        assert "error" in r.json()
