"""Per-user top-K lists: the artifact's (memory maps, nothing computed at load) or cached from
first searches in a bounded LRU; same answers as the search, and the search when they cannot
prove the answer."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.precompute import CachedLists, TopLists, stored_lists, user_lists
from tests.service.modelkit import make_model, publish, with_top_lists


def brute(model, user: int, k: int, exclude=()) -> list[int]:
    a = model.arrays
    s = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    banned = model.seen[user] | set(exclude)
    return [r for r in np.argsort(-s, kind="stable").tolist() if r not in banned][:k]


def lists_of(model, k: int) -> TopLists:
    found = stored_lists(with_top_lists(model, k).arrays)
    assert found is not None
    return found


def test_stored_lists_are_read_as_they_are():
    model = make_model(n_users=40, n_items=60, max_seen=10)
    lists = lists_of(model, 15)
    assert lists.rows.shape == (40, 15) and lists.k == 15
    for u in range(40):
        n = lists.lengths[u]
        assert lists.rows[u, :n].tolist() == brute(model, u, 15)
        assert (lists.rows[u, n:] == -1).all()
        assert lists.complete[u] == (60 - len(model.seen[u]) <= 15)


def test_answer_filters_excluded_items_or_gives_up():
    model = make_model(n_users=5, n_items=60, max_seen=3)
    lists = lists_of(model, 10)
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
    lists = lists_of(model, 12)
    unseen = 12 - len(model.seen[0])
    assert lists.complete[0]
    rows, _ = lists.answer(0, 12, np.asarray(sorted(brute(model, 0, 2))))
    assert rows.tolist() == brute(model, 0, 12)[2:] and len(rows) == unseen - 2


def _ranked(user: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(user, user + 4, dtype=np.int64)
    return rows, -rows.astype(np.float32)


def test_the_cache_keeps_at_most_its_capacity_least_recently_used_out_first():
    none = np.empty(0, np.int64)
    cache = CachedLists(k=4, capacity=3, n_unseen=np.full(100, 50), exact=True)
    assert cache.fills(0, 4, none) and not cache.fills(0, 5, none)  # k above K: no list
    assert not cache.fills(0, 4, np.asarray([1]))  # an exclusion: not the user's list
    for user in (0, 1, 2):
        cache.remember(user, _ranked(user))
    assert cache.size == 3 and not cache.fills(1, 4, none)
    rows, _ = cache.answer(0, 2, none)  # 0 is now the most recently used
    assert rows.tolist() == [0, 1]
    cache.remember(3, _ranked(3))  # drops 1, the least recently used
    assert cache.size == 3
    assert cache.answer(1, 2, none) is None and cache.fills(1, 4, none)
    assert [cache.answer(u, 4, none)[0].tolist() for u in (0, 2, 3)] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [3, 4, 5, 6],
    ]
    for user in range(10, 100):
        cache.remember(user, _ranked(user))
        assert cache.size <= 3
    assert cache.size == 3 and cache.answer(99, 1, none)[0].tolist() == [99]


def test_a_cached_list_shorter_than_k_is_complete_only_for_an_exact_search():
    none = np.empty(0, np.int64)
    for exact in (True, False):
        cache = CachedLists(k=10, capacity=5, n_unseen=np.asarray([4]), exact=exact)
        cache.remember(0, _ranked(0))  # 4 items: every unseen item of user 0
        got = cache.answer(0, 10, none)
        assert (got is not None) == exact
        if exact:
            assert got[0].tolist() == [0, 1, 2, 3]


def test_which_lists_a_model_gets():
    model = make_model(n_users=6, n_items=20)
    stored = with_top_lists(model, 5).arrays
    assert isinstance(user_lists(stored, 100, 10, exact=True), TopLists)
    assert user_lists(stored, 0, 10, exact=True) is None  # lookups off
    cached = user_lists(model.arrays, 100, 10, exact=True)
    assert isinstance(cached, CachedLists) and (cached.k, cached.capacity, cached.size) == (
        20,
        10,
        0,
    )
    assert cached.n_unseen.tolist() == [20 - len(s) for s in model.seen]
    assert user_lists(model.arrays, 100, 0, exact=True) is None


@pytest.mark.parametrize("lists", ["stored", "cached", "off"])
def test_http_answers_are_identical_with_and_without_lists(settings, lists):
    model = make_model(n_users=30, n_items=80, max_seen=12, seed=4)
    served = with_top_lists(model, 25) if lists == "stored" else model
    publish(settings.registry_root, served)
    rng = np.random.default_rng(0)
    app = create_app(settings.model_copy(update={"precompute_k": 0 if lists == "off" else 25}))
    with TestClient(app) as c:
        top = c.app.state.ctx.state.serving.top_lists
        assert {"stored": TopLists, "cached": CachedLists, "off": type(None)}[lists] is type(top)
        for round_ in range(2):  # the second round: the cached lists answer too
            for u in range(30):
                k = int(rng.integers(1, 40))
                excl = sorted(rng.choice(80, size=int(rng.integers(0, 15)), replace=False))
                if round_ == 0 and u % 2:
                    k, excl = 20, []  # a plain request: fills a cached list
                q = f"k={k}" + (f"&exclude={','.join(f'i{e}' for e in excl)}" if excl else "")
                body = c.get(f"/recommend/u{u}?{q}").json()
                want = brute(model, u, k, exclude=excl)
                assert [i["item_id"] for i in body["items"]] == [f"i{r}" for r in want], (u, q)
        metrics = c.get("/metrics").text
    if lists == "cached":
        assert top.size == 15  # the 15 users asked plainly, once each
    searched = 'specrec_recommend_answers_total{source="search"}'
    looked_up = 'specrec_recommend_answers_total{source="precomputed"}'
    if lists == "off":
        assert f"{searched} 60.0" in metrics and looked_up not in metrics
    else:  # k > 25 or too many exclusions fall back to the search; the rest are lookups
        assert looked_up in metrics and searched in metrics


def test_lookup_skips_the_search_thread_and_big_k_uses_it(settings, model):
    publish(settings.registry_root, with_top_lists(model, 50))
    with TestClient(create_app(settings)) as c:
        batcher = c.app.state.ctx.batcher
        before = batcher.batches
        assert c.get("/recommend/u0?k=20").status_code == 200
        assert batcher.batches == before
        assert c.get("/recommend/u0?k=20&exclude_seen=false").status_code == 200
        assert batcher.batches == before + 1
        # the lists hold all 50 items: every list is complete
        assert c.get("/recommend/u0?k=1000").status_code == 200
        assert batcher.batches == before + 2  # k above the list length K = 50 searches


def test_without_stored_lists_only_the_first_request_of_a_user_searches(settings, model):
    publish(settings.registry_root, model)  # an older artifact: no lists
    app = create_app(settings.model_copy(update={"top_list_cache_users": 2}))
    with TestClient(app) as c:
        batcher, serving = c.app.state.ctx.batcher, c.app.state.ctx.state.serving
        assert isinstance(serving.top_lists, CachedLists) and serving.top_lists.size == 0
        before = batcher.batches
        first = c.get("/recommend/u0?k=5")
        assert first.status_code == 200 and batcher.batches == before + 1
        again = c.get("/recommend/u0?k=7")
        assert again.status_code == 200 and batcher.batches == before + 1
        assert [i["item_id"] for i in again.json()["items"]][:5] == [
            i["item_id"] for i in first.json()["items"]
        ]
        for user in ("u1", "u2", "u3"):
            assert c.get(f"/recommend/{user}?k=5").status_code == 200
        assert serving.top_lists.size == 2 and batcher.batches == before + 4
        assert c.get("/recommend/u0?k=5").status_code == 200  # dropped: searched again
        assert batcher.batches == before + 5


def test_the_served_arrays_are_read_only_maps_of_the_artifact(settings, model):
    publish(settings.registry_root, with_top_lists(model, 20))
    with TestClient(create_app(settings)) as c:
        serving = c.app.state.ctx.state.serving
        a = serving.arrays
        for name in a.present():
            arr = getattr(a, name)
            assert isinstance(arr, np.memmap) and not arr.flags.owndata, name
            assert not arr.flags.writeable, name
        assert isinstance(serving.top_lists, TopLists)
        assert isinstance(serving.top_lists.rows, np.memmap)
        assert np.shares_memory(serving.top_lists.rows, a.top_rows)
        with pytest.raises(ValueError, match="read-only"):
            a.user_emb[0, 0] = 1.0
        assert c.get("/recommend/u0?k=5").status_code == 200
