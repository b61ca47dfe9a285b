"""Precomputed per-user top-K lists: same answers as the search, and the search when they
cannot prove the answer."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.index import NumpyExactIndex, build_index
from service.precompute import precompute
from service.settings import IndexSettings
from tests.service.modelkit import make_model, publish


def brute(model, user: int, k: int, exclude=()) -> list[int]:
    a = model.arrays
    s = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    banned = model.seen[user] | set(exclude)
    return [r for r in np.argsort(-s, kind="stable").tolist() if r not in banned][:k]


def test_lists_are_the_exact_topk_of_unseen_items():
    model = make_model(n_users=40, n_items=60, max_seen=10)
    lists = precompute(NumpyExactIndex(model.arrays.item_emb), model.arrays, k=15, chunk=7)
    assert lists.rows.shape == (40, 15) and lists.k == 15
    for u in range(40):
        n = lists.lengths[u]
        assert lists.rows[u, :n].tolist() == brute(model, u, 15)
        assert (lists.rows[u, n:] == -1).all()
        assert lists.complete[u] == (60 - len(model.seen[u]) <= 15)


def test_answer_filters_excluded_items_or_gives_up():
    model = make_model(n_users=5, n_items=60, max_seen=3)
    lists = precompute(NumpyExactIndex(model.arrays.item_emb), model.arrays, k=10)
    top = brute(model, 0, 10)
    rows, scores = lists.answer(0, 5, np.asarray(sorted(top[:3])))
    assert rows.tolist() == brute(model, 0, 5, exclude=top[:3])
    assert rows.dtype == np.int64 and len(scores) == 5
    # 10 listed, 6 excluded: 4 left < k = 5, and unseen items beyond the list exist
    assert lists.answer(0, 5, np.asarray(sorted(top[:6]))) is None
    assert lists.answer(0, 11, np.empty(0, np.int64)) is None  # k above K


def test_a_complete_list_answers_short_when_few_items_remain():
    # 12 items; user 0 saw some: a K = 12 list holds every unseen item
    model = make_model(n_users=3, n_items=12, max_seen=5, seed=3)
    lists = precompute(NumpyExactIndex(model.arrays.item_emb), model.arrays, k=12)
    unseen = 12 - len(model.seen[0])
    assert lists.complete[0]
    rows, _ = lists.answer(0, 12, np.asarray(sorted(brute(model, 0, 2))))
    assert rows.tolist() == brute(model, 0, 12)[2:] and len(rows) == unseen - 2


def test_approximate_lists_are_never_complete():
    model = make_model(n_users=10, n_items=400, max_seen=3)
    index = build_index(model.arrays.item_emb, IndexSettings(index_kind="ivf", use_gpu=False))
    lists = precompute(index, model.arrays, k=400)
    assert not lists.complete.any()


@pytest.mark.parametrize("precompute_k", [0, 25])
def test_http_answers_are_identical_with_and_without_lists(settings, precompute_k):
    model = make_model(n_users=30, n_items=80, max_seen=12, seed=4)
    publish(settings.registry_root, model)
    rng = np.random.default_rng(0)
    app = create_app(settings.model_copy(update={"precompute_k": precompute_k}))
    with TestClient(app) as c:
        assert (c.app.state.ctx.state.serving.top_lists is None) == (precompute_k == 0)
        for u in range(30):
            k = int(rng.integers(1, 40))
            excl = sorted(rng.choice(80, size=int(rng.integers(0, 15)), replace=False).tolist())
            q = f"k={k}" + (f"&exclude={','.join(f'i{e}' for e in excl)}" if excl else "")
            body = c.get(f"/recommend/u{u}?{q}").json()
            want = brute(model, u, k, exclude=excl)
            assert [i["item_id"] for i in body["items"]] == [f"i{r}" for r in want], (u, q)
        metrics = c.get("/metrics").text
    searched = 'specrec_recommend_answers_total{source="search"}'
    looked_up = 'specrec_recommend_answers_total{source="precomputed"}'
    if precompute_k == 0:
        assert f"{searched} 30.0" in metrics and looked_up not in metrics
    else:  # k > 25 or too many exclusions fall back to the search; the rest are lookups
        assert looked_up in metrics and searched in metrics


def test_lookup_skips_the_search_thread_and_big_k_uses_it(settings, published):
    with TestClient(create_app(settings)) as c:
        batcher = c.app.state.ctx.batcher
        before = batcher.batches
        assert c.get("/recommend/u0?k=20").status_code == 200
        assert batcher.batches == before
        assert c.get("/recommend/u0?k=20&exclude_seen=false").status_code == 200
        assert batcher.batches == before + 1
        # default precompute_k = 100 > 50 items here: every list is complete
        assert c.get("/recommend/u0?k=1000").status_code == 200
        assert batcher.batches == before + 2  # k above the list length K = 50 searches


def test_lists_are_skipped_above_the_cell_budget(settings, published):
    app = create_app(settings.model_copy(update={"precompute_max_cells": 30 * 50 - 1}))
    with TestClient(app):
        assert app.state.ctx.state.serving.top_lists is None
