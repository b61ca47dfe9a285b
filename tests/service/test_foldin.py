"""Fold-in: the rules against their formulas in numpy, and the API answering a history, a user
known only through POST /interactions and a known user's new interactions with the exact items
of a numpy reference (source ``fold-in``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.artifact import ModelRegistry
from service.app import create_app
from service.foldin import (
    FoldIn,
    csr_rows,
    fit_map,
    history_sum,
    history_sums,
    item_weights,
    map_fit_rows,
    rule_for,
)
from service.fresh import CHECK_INTERVAL_S
from service.settings import Settings
from store.feedback import FeedbackStore, Interaction
from tests.service.modelkit import ADMIN_TOKEN, Model, auth, make_model

N_USERS, N_ITEMS = 20, 60


# ---- the rules -----------------------------------------------------------------------------
def test_cosine_sum_is_the_sum_of_unit_item_vectors() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((10, 4)).astype(np.float32)
    w = item_weights(items, np.zeros(10), "cosine")
    got = history_sum(items, w, np.array([3, 7, 3, 1]))  # 3 twice: counts once
    expected = sum(items[i].astype(np.float64) / np.linalg.norm(items[i]) for i in (1, 3, 7))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert not history_sum(items, w, np.array([], dtype=np.int64)).any()


def test_propagation_weights_follow_lightgcn_normalisation() -> None:
    items = np.ones((3, 2), dtype=np.float32)
    w = item_weights(items, np.array([0, 3, 8]), "propagation")
    np.testing.assert_allclose(w, [1.0, 0.5, 1 / 3], rtol=1e-6)
    assert rule_for("lightgcn") == "propagation" and rule_for("mf") == rule_for(None) == "cosine"


def test_history_sums_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((30, 5)).astype(np.float32)
    w = item_weights(items, rng.integers(0, 9, 30), "propagation")
    histories = [[0, 4, 9], [], [29], list(range(10, 20))]
    indptr = np.cumsum([0, *map(len, histories)])
    indices = np.asarray([i for h in histories for i in h], dtype=np.int64)
    many = history_sums(items, w, indptr, indices)
    for h, row in zip(histories, many, strict=True):
        np.testing.assert_allclose(row, history_sum(items, w, np.asarray(h, int)), atol=1e-6)
    # in chunks of one and two histories (an empty one alone in its chunk): the same sums
    for chunk in (1, 2):
        np.testing.assert_array_equal(history_sums(items, w, indptr, indices, chunk), many)


def test_csr_rows_and_the_fit_sample() -> None:
    indptr, indices = np.array([0, 2, 2, 5, 6]), np.array([1, 4, 0, 2, 3, 9])
    got_ptr, got_idx = csr_rows(indptr, indices, np.array([3, 0, 1, 2]))
    assert got_ptr.tolist() == [0, 1, 3, 3, 6] and got_idx.tolist() == [9, 1, 4, 0, 2, 3]
    assert map_fit_rows(5, limit=8).tolist() == [0, 1, 2, 3, 4]
    assert map_fit_rows(10, limit=4).tolist() == [0, 3, 6, 9]


def test_a_map_fitted_on_a_sample_is_the_map_of_those_users() -> None:
    """Above ``fit_users`` the map is fitted on that many evenly spaced users: exactly
    fit_map of their sums and vectors (not of the others, which here follow another map)."""
    rng = np.random.default_rng(4)
    n, d, m = 50, 4, 40
    items = rng.standard_normal((n, d)).astype(np.float32)
    histories = [np.sort(rng.choice(n, size=6, replace=False)) for _ in range(m)]
    indptr = np.cumsum([0, *map(len, histories)])
    indices = np.concatenate(histories)
    w = item_weights(items, np.bincount(indices, minlength=n), "cosine")
    sums = history_sums(items, w, indptr, indices)
    users = rng.standard_normal((m, d)).astype(np.float32)
    rows = map_fit_rows(m, 10)
    fold = FoldIn.fit(items, users, indptr, indices, "cosine", fit_users=10)
    np.testing.assert_allclose(fold.map, fit_map(sums[rows], users[rows]), rtol=1e-10)
    assert not np.allclose(fold.map, fit_map(sums, users), atol=1e-3)


def test_the_map_is_ridge_regression_onto_the_trained_vectors() -> None:
    rng = np.random.default_rng(2)
    sums, true_map = rng.standard_normal((200, 6)), rng.standard_normal((6, 6))
    users = sums @ true_map
    np.testing.assert_allclose(fit_map(sums, users, ridge=0.0), true_map, atol=1e-8)
    lam = 0.5 * np.trace(sums.T @ sums) / 6
    expected = np.linalg.inv(sums.T @ sums + lam * np.eye(6)) @ sums.T @ users
    np.testing.assert_allclose(fit_map(sums, users, ridge=0.5), expected, atol=1e-8)
    assert (fit_map(np.zeros((3, 6)), users[:3]) == np.eye(6)).all()


def test_a_fitted_fold_in_reproduces_users_made_by_a_linear_rule() -> None:
    """When trained vectors are a linear function of the history sums, the fold-in of a
    training user's items is (up to the small ridge) that user's vector, and a known user's
    update with new items is the fold-in of the whole history."""
    rng = np.random.default_rng(3)
    n, d = 80, 6
    items = rng.standard_normal((n, d)).astype(np.float32)
    histories = [rng.choice(n, size=rng.integers(3, 15), replace=False) for _ in range(300)]
    indptr = np.cumsum([0, *map(len, histories)])
    indices = np.concatenate([np.sort(h) for h in histories])
    w = item_weights(items, np.zeros(n), "cosine")
    true_map = rng.standard_normal((d, d))
    users = (history_sums(items, w, indptr, indices) @ true_map).astype(np.float32)
    fold = FoldIn.fit(items, users, indptr, indices, "cosine")
    np.testing.assert_allclose(fold.vector(histories[0]), users[0], rtol=1e-2, atol=1e-2)
    old, new = np.sort(histories[1]), np.setdiff1d(np.arange(10), histories[1])
    np.testing.assert_allclose(
        fold.update(fold.vector(old), new), fold.vector(np.union1d(old, new)), atol=1e-5
    )


# ---- through the API -----------------------------------------------------------------------
def ranked(vec: np.ndarray, item_emb: np.ndarray, banned: Iterable[int], k: int) -> list[str]:
    """Reference top-k: float64 scores, banned rows out, ties by the lower row."""
    scores = item_emb.astype(np.float64) @ vec.astype(np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores)).tolist()
    banned = set(banned)
    return [f"i{r}" for r in order if r not in banned][:k]


def reference_weights(model: Model, rule: str) -> np.ndarray:
    items = model.arrays.item_emb.astype(np.float64)
    if rule == "cosine":
        return 1 / np.linalg.norm(items, axis=1)
    return 1 / np.sqrt(np.bincount(model.arrays.seen_indices, minlength=len(items)) + 1.0)


def reference_map(model: Model, rule: str) -> np.ndarray:
    """Ridge regression (lam = 1e-3 mean diagonal) from the training users' weighted item
    sums to their trained vectors, in float64 numpy."""
    items, w = model.arrays.item_emb.astype(np.float64), reference_weights(model, rule)
    sums = np.stack(
        [sum((w[r] * items[r] for r in s), np.zeros(items.shape[1])) for s in model.seen]
    )
    gram = sums.T @ sums
    lam = 1e-3 * np.trace(gram) / len(gram)
    return np.linalg.solve(gram + lam * np.eye(len(gram)), sums.T @ model.arrays.user_emb)


def reference_sum(model: Model, rows: Iterable[int], rule: str = "cosine") -> np.ndarray:
    items, w = model.arrays.item_emb.astype(np.float64), reference_weights(model, rule)
    return sum((w[r] * items[r] for r in set(rows)), np.zeros(items.shape[1]))


def reference_fold_in(model: Model, rows: Sequence[int], rule: str = "cosine") -> np.ndarray:
    return reference_sum(model, rows, rule) @ reference_map(model, rule)


def ids_of(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def build(
    tmp_path: Path, encoder: str = "mf", precompute_k: int = 100, **extra
) -> tuple[Settings, Model]:
    settings = Settings(
        home=tmp_path, admin_token=ADMIN_TOKEN, watch_interval_s=0.05, precompute_k=precompute_k
    )
    model = make_model(n_users=N_USERS, n_items=N_ITEMS, seed=3)
    ModelRegistry(settings.registry_root).publish(
        model.arrays, config={"encoder": encoder}, **extra
    )
    return settings, model


def ingest(client: TestClient, rows: list[tuple[str, str]]) -> None:
    body = {"interactions": [{"user_id": u, "item_id": i} for u, i in rows]}
    r = client.post("/interactions", json=body, headers=auth())
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("encoder", ["mf", "lightgcn"])
def test_a_history_is_folded_in_and_answered_exactly(tmp_path: Path, encoder: str) -> None:
    settings, model = build(tmp_path, encoder)
    history = [4, 17, 30]
    vec = reference_fold_in(model, history, "propagation" if encoder == "lightgcn" else "cosine")
    with TestClient(create_app(settings)) as c:
        body = {"history": ["i4", "i17", "nope", "i30", "i4"], "k": 7}
        r = c.post("/recommend", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        (entry,) = out["results"]
        assert entry["user_id"] is None and entry["source"] == "fold-in" and entry["error"] is None
        assert ids_of(entry) == ranked(vec, model.arrays.item_emb, history, 7)
        assert out["unknown_history"] == ["nope"]
        # the same options as for users: exclude_seen off, include, offset, exclude
        keep = ranked(vec, model.arrays.item_emb, [], 7)
        off = c.post("/recommend", json=body | {"exclude_seen": False}).json()["results"][0]
        assert ids_of(off) == keep
        page = c.post("/recommend", json=body | {"k": 3, "offset": 3}).json()["results"][0]
        assert ids_of(page) == ranked(vec, model.arrays.item_emb, history, 6)[3:]
        include = ["i1", "i4", "i9", "i50", "i51"]
        inc = c.post("/recommend", json=body | {"include": include}).json()["results"][0]
        assert inc["source"] == "fold-in"
        assert ids_of(inc) == [
            i for i in ranked(vec, model.arrays.item_emb, history, N_ITEMS) if i in include
        ]
        ex = c.post("/recommend", json=body | {"exclude": [keep[0]]}).json()["results"][0]
        assert ids_of(ex) == ranked(vec, model.arrays.item_emb, [*history, int(keep[0][1:])], 7)


def test_a_history_without_a_catalogue_item_is_reported_or_falls_back(tmp_path: Path) -> None:
    settings, model = build(tmp_path)
    with TestClient(create_app(settings)) as c:
        out = c.post("/recommend", json={"history": ["x", "y"], "k": 3}).json()
        entry = out["results"][0]
        assert entry["error"]["code"] == "unknown_history" and entry["items"] == []
        assert entry["source"] is None and out["unknown_history"] == ["x", "y"]
        fb = c.post("/recommend", json={"history": [], "fallback": "popular", "k": 3}).json()
        assert fb["results"][0]["source"] == "popular"
        assert len(fb["results"][0]["items"]) == 3
        nothing_stored = FeedbackStore(settings.feedback_db).count()
        assert nothing_stored == 0


@pytest.mark.parametrize("precompute_k", [0, 100])
def test_a_user_known_only_through_ingestion_is_folded_in(
    tmp_path: Path, precompute_k: int
) -> None:
    settings, model = build(tmp_path, precompute_k=precompute_k)
    with TestClient(create_app(settings)) as c:
        assert c.get("/recommend/newbie?k=5").status_code == 404
        ingest(c, [("newbie", "i8"), ("newbie", "i21"), ("newbie", "not-in-model")])
        r = c.get("/recommend/newbie?k=5")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "fold-in" and body["fallback"] is None
        expected = ranked(reference_fold_in(model, [8, 21]), model.arrays.item_emb, [8, 21], 5)
        assert ids_of(body) == expected
        batch = c.post("/recommend", json={"user_ids": ["newbie", "u0"], "k": 5}).json()
        assert [e["source"] for e in batch["results"]] == ["fold-in", "model"]
        assert ids_of(batch["results"][0]) == expected
        metrics = c.get("/metrics").text
        assert 'specrec_recommend_answers_total{source="fold-in"} 2.0' in metrics


def test_a_known_users_new_items_move_their_vector(tmp_path: Path) -> None:
    settings, model = build(tmp_path)
    user = next(u for u in range(N_USERS) if len(model.seen[u]) >= 2)
    seen = sorted(model.seen[user])
    new = [r for r in (2, 11, 40) if r not in model.seen[user]][:2]
    u0 = model.arrays.user_emb[user].astype(np.float64)
    moved = u0 + reference_fold_in(model, new)
    with TestClient(create_app(settings)) as c:
        before = c.get(f"/recommend/u{user}?k=6").json()
        assert before["source"] == "model"
        ingest(c, [(f"u{user}", f"i{r}") for r in new] + [(f"u{user}", f"i{seen[0]}")])
        after = c.get(f"/recommend/u{user}?k=6").json()
        assert after["source"] == "fold-in"
        assert ids_of(after) == ranked(moved, model.arrays.item_emb, [*seen, *new], 6)
        assert not {f"i{r}" for r in new} & set(ids_of(after))


def test_a_model_trained_on_the_rows_answers_from_its_own_vectors(tmp_path: Path) -> None:
    settings, model = build(tmp_path)
    with TestClient(create_app(settings)) as c:
        ingest(c, [("u0", "i1"), ("u0", "i2")])
        assert not {1, 2} <= model.seen[0]
        assert c.get("/recommend/u0?k=3").json()["source"] == "fold-in"
        seq = FeedbackStore(settings.feedback_db).max_seq()
        version = ModelRegistry(settings.registry_root).publish(
            model.arrays, config={"encoder": "mf"}, extra={"ingested": {"max_seq": seq}}
        )
        r = c.post(f"/models/{version}/activate", headers=auth())
        assert r.status_code == 200, r.text
        assert c.get("/recommend/u0?k=3").json()["source"] == "model"
        unseen = next(r for r in range(3, N_ITEMS) if r not in model.seen[0])
        ingest(c, [("u0", f"i{unseen}")])  # newer than that model: folded in again
        assert c.get("/recommend/u0?k=3").json()["source"] == "fold-in"


def test_rows_written_by_another_process_are_seen(tmp_path: Path) -> None:
    """Another API worker's (or any writer's) commit reaches this worker's next request."""
    settings, model = build(tmp_path)
    with TestClient(create_app(settings)) as c:
        assert c.get("/recommend/ghost?k=3").status_code == 404
        FeedbackStore(settings.feedback_db).append([Interaction("ghost", "i5")])
        time.sleep(2 * CHECK_INTERVAL_S)  # another writer: seen at the next check
        body = c.get("/recommend/ghost?k=3").json()
        assert body["source"] == "fold-in"
        assert ids_of(body) == ranked(reference_fold_in(model, [5]), model.arrays.item_emb, [5], 3)


def test_fold_in_off_keeps_new_rows_for_the_next_retrain(tmp_path: Path) -> None:
    settings, _ = build(tmp_path)
    off = settings.model_copy(update={"fold_in": False})
    with TestClient(create_app(off)) as c:
        ingest(c, [("newbie", "i8"), ("u0", "i9")])
        assert c.get("/recommend/newbie?k=5").status_code == 404
        assert c.get("/recommend/u0?k=5").json()["source"] == "model"
        hist = c.post("/recommend", json={"history": ["i8"], "k": 2}).json()
        assert hist["results"][0]["source"] == "fold-in"  # an explicit history still works


def test_similar_leaves_out_a_users_ingested_items(tmp_path: Path) -> None:
    settings, model = build(tmp_path)
    items = model.arrays.item_emb.astype(np.float64)
    scores = items @ items[0]
    order = [r for r in np.lexsort((np.arange(N_ITEMS), -scores)).tolist() if r != 0]
    with TestClient(create_app(settings)) as c:
        assert c.get("/similar/i0?k=3&user_id=newbie").status_code == 404
        ingest(c, [("newbie", f"i{order[0]}")])
        body = c.get("/similar/i0?k=3&user_id=newbie").json()
        assert ids_of(body) == [f"i{r}" for r in order[1:4]]
        known = c.get("/similar/i0?k=3").json()
        assert ids_of(known) == [f"i{r}" for r in order[:3]]
