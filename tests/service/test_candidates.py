"""Candidate control (include, offset, /similar's user_id) against a numpy reference: exact items
through ServingModel and through the app, lookup and search paths equal, short answers with
their reason, limits as 422s."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.modelkit import Model, make_model
from tests.service.test_serving import K, integer_model, one, recommend, serve


def ranking(
    model: Model,
    user: int,
    exclude_seen: bool = True,
    exclude: Sequence[int] = (),
    include: Sequence[int] | None = None,
) -> list[int]:
    """Every rankable row, best first: scores = user_emb @ item_emb.T (float64), seen and
    excluded rows removed, only `include` rows when given, ties by the lower row."""
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    banned = (model.seen[user] if exclude_seen else set()) | set(exclude)
    keep = set(range(a.n_items)) if include is None else set(include)
    order = np.lexsort((np.arange(len(scores)), -scores)).tolist()
    return [r for r in order if r not in banned and r in keep]


def similar_ranking(
    model: Model, row: int, user: int | None = None, include: Sequence[int] | None = None
) -> list[int]:
    items = model.arrays.item_emb.astype(np.float64)
    scores = items @ items[row]
    banned = {row} | (model.seen[user] if user is not None else set())
    keep = set(range(len(scores))) if include is None else set(include)
    order = np.lexsort((np.arange(len(scores)), -scores)).tolist()
    return [r for r in order if r not in banned and r in keep]


def ids(rows: Sequence[int]) -> list[str]:
    return [f"i{r}" for r in rows]


# ---- ServingModel --------------------------------------------------------------------------
MODELS = {
    "gaussian": lambda: make_model(n_users=25, n_items=80, max_seen=12, seed=5),
    "integer-ties": integer_model,
}


@pytest.fixture(params=sorted(MODELS))
def model(request) -> Model:
    return MODELS[request.param]()


def test_offset_pages_are_slices_of_the_deeper_ranking_on_every_path(settings, model):
    with_lists, without = serve(model, K, settings), serve(model, 0, settings)
    for user in range(model.arrays.n_users):
        full = ranking(model, user)
        for k, offset in ((4, 0), (4, 4), (4, 8), (5, 7), (K, K), (3, 200), (3, 1000)):
            want = full[offset : offset + k]
            looked_up = one(with_lists, f"u{user}", k, offset=offset)
            searched = one(without, f"u{user}", k, offset=offset)
            assert searched.source == "search"
            # the lists answer a page only when it lies within them (offset + k <= K)
            assert looked_up.source == ("precomputed" if offset + k <= K else "search")
            for answer in (looked_up, searched):
                assert answer.rows.tolist() == want, (user, k, offset, answer.source)
                assert (answer.short is None) == (len(want) == k)
    # page 2 of k = 4 is items 5-8 of k = 8
    p2 = one(with_lists, "u0", 4, offset=4).rows.tolist()
    assert p2 == one(with_lists, "u0", 8).rows.tolist()[4:]


def test_include_ranks_only_those_items_minus_seen_and_excluded(settings, model):
    serving = serve(model, K, settings)
    rng = np.random.default_rng(3)
    n = model.arrays.n_items
    for user in range(model.arrays.n_users):
        incl = rng.choice(n, size=15, replace=False).tolist()
        seen_in = sorted(model.seen[user] & set(incl))
        excl = incl[:2]
        want = ranking(model, user, exclude=excl, include=incl)
        recs = recommend(
            serving,
            [f"u{user}"],
            5,
            include=[*ids(incl), "nope", "zz"],
            exclude=[*ids(excl), "gone"],
        )
        (answer,) = recs.answers
        assert answer.source == "include"
        assert answer.rows.tolist() == want[:5], (user, seen_in)
        assert recs.unknown_include == ["nope", "zz"] and recs.unknown_exclude == ["gone"]
        a = model.arrays
        np.testing.assert_allclose(
            answer.scores, a.item_emb[want[:5]] @ a.user_emb[user], rtol=1e-5, atol=1e-5
        )
        # seen items come back inside the include set with exclude_seen=False
        unseen = one(serving, f"u{user}", 20, include=ids(incl), exclude_seen=False)
        assert unseen.rows.tolist() == ranking(model, user, False, include=incl)[:20]


def test_short_answers_say_why(settings):
    model = make_model(n_users=5, n_items=40, max_seen=0, seed=2)  # nobody saw anything
    serving = serve(model, K, settings)
    small = one(serving, "u0", 10, include=["i1", "i2", "i3", "nope"])
    assert small.rows.tolist() == ranking(model, 0, include=[1, 2, 3])
    assert small.short == "include has 3 rankable items after exclusions"
    excluded = one(serving, "u0", 10, include=["i1", "i2", "i3"], exclude=["i2"])
    assert excluded.short == "include has 2 rankable items after exclusions"
    past = one(serving, "u0", 10, include=["i1", "i2", "i3"], offset=2)
    assert past.rows.tolist() == ranking(model, 0, include=[1, 2, 3])[2:]
    assert past.short == "include has 3 rankable items after exclusions; offset 2 leaves 1"
    empty = one(serving, "u0", 5, include=[])
    assert len(empty.rows) == 0 and empty.answered
    assert empty.short == "include has 0 rankable items after exclusions"
    end = one(serving, "u0", 10, offset=35)
    assert end.rows.tolist() == ranking(model, 0)[35:]
    assert end.short == "only 40 rankable items after exclusions; offset 35 leaves 5"
    capped = one(serving, "u0", 10, offset=25, max_depth=30)
    assert capped.rows.tolist() == ranking(model, 0)[25:30]
    assert capped.short == "ranking stops at depth 30 (max_k); offset 25 leaves 5"
    assert one(serving, "u0", 10).short is None and one(serving, "u0", 10, offset=3).short is None


def test_popular_fallback_within_include_and_with_offset(settings):
    model = make_model(popularity_boost={7: 25, 3: 20, 11: 15, 5: 10})
    serving = serve(model, K, settings)
    pop = model.arrays.item_popularity
    order = np.lexsort((np.arange(len(pop)), -pop)).tolist()
    answer = one(serving, "ghost", 2, fallback="popular", include=["i3", "i11", "i5", "i0"])
    assert answer.source == "fallback" and answer.fallback == "popular"
    assert answer.rows.tolist() == [r for r in order if r in {3, 11, 5, 0}][:2]
    paged = one(serving, "ghost", 3, fallback="popular", offset=2, exclude=["i3"])
    assert paged.rows.tolist() == [r for r in order if r != 3][2:5]


def test_similar_with_user_include_and_offset(settings, model):
    serving = serve(model, K, settings)

    def similar(item: str, k: int, **kw):
        return asyncio.run(serving.similar(item, k, **kw))

    for row in (0, 17, 40):
        for user in (None, 3):
            uid = None if user is None else f"u{user}"
            full = similar_ranking(model, row, user)
            assert similar(f"i{row}", 6, user_id=uid).rows.tolist() == full[:6]
            assert similar(f"i{row}", 6, user_id=uid, offset=6).rows.tolist() == full[6:12]
            incl = [row, 1, 2, 5, 9, 33, 60]
            got = similar(f"i{row}", 3, user_id=uid, include=[*ids(incl), "nope"], offset=1)
            assert got.source == "include"
            assert got.rows.tolist() == similar_ranking(model, row, user, incl)[1:4]
    assert not similar("i0", 3, user_id="ghost").answered
    small = similar("i0", 5, include=["i0", "i1", "i2"])
    assert small.short == "include has 2 rankable items after exclusions"


def test_invalid_offset_raises(settings):
    serving = serve(make_model(), K, settings)
    with pytest.raises(ValueError, match="offset"):
        recommend(serving, ["u0"], 3, offset=-1)
    with pytest.raises(ValueError, match="offset"):
        asyncio.run(serving.similar("i0", 3, offset=-1))


# ---- through the app (conftest's `published` serves the `model` above, both kinds) ------------
def item_ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_get_and_post_pages_equal_the_deeper_ranking(client, model):
    for user in (0, 5, 11):
        p2 = client.get(f"/recommend/u{user}?k=20&offset=20").json()
        full = client.get(f"/recommend/u{user}?k=40").json()
        assert item_ids(p2) == item_ids(full)[20:40] == ids(ranking(model, user)[20:40])
        assert [i["rank"] for i in p2["items"]] == [i["rank"] for i in full["items"]][20:40]
        assert p2["items"][0]["rank"] == 21 and p2["k"] == 20
        # lookup (offset + k <= 100 = the precomputed K) and search (k > K) agree
        deep = client.get(f"/recommend/u{user}?k=101").json()
        assert item_ids(deep)[20:40] == item_ids(p2)
    body = {"user_ids": ["u0", "u5", "ghost"], "k": 20, "offset": 20}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    results = r.json()["results"]
    for res, user in zip(results[:2], (0, 5), strict=True):
        assert item_ids(res) == ids(ranking(model, user)[20:40])
        assert res["items"][0]["rank"] == 21
    assert results[2]["error"]["code"] == "unknown_user"
    assert "unknown_include" not in r.json()


def test_get_and_post_include_with_unknown_ids_and_exclusions(client, model):
    incl = [1, 4, 9, 16, 25, 36, 49]
    want = ranking(model, 2, exclude=[9], include=incl)
    q = ",".join(ids(incl)) + ",nope"
    r = client.get(f"/recommend/u2?k=3&include={q}&exclude=i9")
    assert r.status_code == 200
    body = r.json()
    assert item_ids(body) == ids(want[:3]) and body["unknown_include"] == ["nope"]
    assert "short" not in body
    post = client.post(
        "/recommend",
        json={"user_ids": ["u2"], "k": 3, "include": [*ids(incl), "nope"], "exclude": ["i9"]},
    ).json()
    assert item_ids(post["results"][0]) == ids(want[:3]) and post["unknown_include"] == ["nope"]
    # k beyond the include set: what exists, and why
    big = client.get(f"/recommend/u2?k=20&include={q}&exclude=i9").json()
    assert item_ids(big) == ids(want)
    assert big["short"] == f"include has {len(want)} rankable items after exclusions"
    post = client.post(
        "/recommend", json={"user_ids": ["u2"], "k": 20, "include": ids(incl), "exclude": ["i9"]}
    ).json()
    assert post["results"][0]["short"] == big["short"]
    blank = client.get("/recommend/u2?include=").json()
    assert blank["items"] == [] and blank["unknown_include"] == []
    assert blank["short"] == "include has 0 rankable items after exclusions"


def test_responses_without_the_new_parameters_keep_their_fields(client):
    """Only ``source`` (model / fold-in / popular) is always added."""
    body = client.get("/recommend/u0?k=5").json()
    assert set(body) == {
        "user_id",
        "model_version",
        "k",
        "items",
        "source",
        "fallback",
        "exact",
        "unknown_exclude",
    }
    assert body["source"] == "model"
    batch = client.post("/recommend", json={"user_ids": ["u0"], "k": 5}).json()
    assert set(batch) == {"model_version", "k", "exact", "results", "unknown_exclude"}
    assert set(batch["results"][0]) == {"user_id", "items", "source", "fallback", "error"}
    assert set(client.get("/similar/i0?k=5").json()) == {
        "item_id",
        "model_version",
        "k",
        "exact",
        "items",
    }


def test_offset_past_the_end_and_the_depth_cap(client, model):
    n = len(ranking(model, 1))
    r = client.get(f"/recommend/u1?k=20&offset={n - 3}")
    assert r.status_code == 200
    body = r.json()
    assert item_ids(body) == ids(ranking(model, 1)[n - 3 :])
    assert body["short"] == f"only {n} rankable items after exclusions; offset {n - 3} leaves 3"
    assert [i["rank"] for i in body["items"]] == [n - 2, n - 1, n]


def test_depth_cap_at_max_k(settings, published, model):
    with TestClient(create_app(settings.model_copy(update={"max_k": 10}))) as c:
        body = c.get("/recommend/u1?k=5&offset=8").json()
        assert item_ids(body) == ids(ranking(model, 1)[8:10])
        assert body["short"] == "ranking stops at depth 10 (max_k); offset 8 leaves 2"
        assert c.get("/recommend/u1?k=5&offset=10").status_code == 422
        assert c.get("/similar/i1?k=5&offset=10").status_code == 422


@pytest.mark.parametrize(
    ("query", "msg", "type_"),
    [
        ("offset=-1", "Input should be greater than or equal to 0", "greater_than_equal"),
        ("offset=1000", "Input should be less than or equal to 999", "less_than_equal"),
        (
            "offset=x",
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/recommend/u0", "/similar/i0"])
def test_offset_limits_are_422_with_the_error_body(client, path, query, msg, type_):
    r = client.get(f"{path}?{query}")
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "validation_error",
            "message": f"query.offset: {msg}",
            "details": [
                {"loc": ["query", "offset"], "msg": msg, "type": type_, "input": query[7:]}
            ],
        }
    }


def test_include_limits_are_422(settings, published):
    with TestClient(create_app(settings.model_copy(update={"max_exclude": 2}))) as c:
        for path in ("/recommend/u0", "/similar/i0"):
            r = c.get(f"{path}?include=a,b,c")
            assert r.status_code == 422
            assert r.json()["error"]["message"] == "query.include: at most 2 ids allowed, got 3"
            assert c.get(f"{path}?include=i1,bad%01id").status_code == 422
            assert c.get(f"{path}?include=a,,b,").status_code == 200  # blanks do not count
        r = c.post("/recommend", json={"user_ids": ["u0"], "include": ["a", "b", "c"]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
        for offset in (-1, 1000, "3", 1.5):
            r = c.post("/recommend", json={"user_ids": ["u0"], "offset": offset})
            assert r.status_code == 422, offset


def test_similar_with_user_id_include_and_offset(client, model):
    full = similar_ranking(model, 17, user=4)
    body = client.get("/similar/i17?k=5&offset=5&user_id=u4").json()
    assert item_ids(body) == ids(full[5:10]) and body["items"][0]["rank"] == 6
    incl = [17, 2, 3, 30, 31, 44]
    r = client.get(f"/similar/i17?k=10&user_id=u4&include={','.join(ids(incl))},nope")
    body = r.json()
    want = similar_ranking(model, 17, 4, incl)
    assert item_ids(body) == ids(want) and body["unknown_include"] == ["nope"]
    assert body["short"] == f"include has {len(want)} rankable items after exclusions"
    r = client.get("/similar/i17?user_id=ghost")
    assert (r.status_code, r.json()) == (
        404,
        {"error": {"code": "unknown_user", "message": "unknown user_id 'ghost'"}},
    )
    assert client.get("/similar/nope?user_id=ghost").json()["error"]["code"] == "unknown_item"
    assert client.get("/similar/i17?user_id=").status_code == 422
    assert client.get("/similar/i17?user_id=bad%01").status_code == 422
