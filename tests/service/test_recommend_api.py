"""GET/POST /recommend and GET /similar through the app: results, exclusion, every error path."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.modelkit import Model, make_model, publish


def expected_topk(model: Model, user: int, k: int, exclude_seen=True, exclude=()) -> list[str]:
    """Independent brute force: argsort of U @ I.T (float64) with seen/excluded items masked."""
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    banned = (model.seen[user] if exclude_seen else set()) | set(exclude)
    order = [r for r in np.argsort(-scores, kind="stable").tolist() if r not in banned]
    return [f"i{r}" for r in order[:k]]


def test_recommend_returns_brute_force_topk_without_seen_items(client, model, published):
    for user in range(model.arrays.n_users):
        r = client.get(f"/recommend/u{user}?k=10")
        assert r.status_code == 200
        body = r.json()
        ids = [it["item_id"] for it in body["items"]]
        assert ids == expected_topk(model, user, 10)
        assert not {f"i{s}" for s in model.seen[user]} & set(ids)
        assert [it["rank"] for it in body["items"]] == list(range(1, 11))
        a = model.arrays
        want = [float(a.user_emb[user] @ a.item_emb[int(i[1:])]) for i in ids]
        np.testing.assert_allclose([it["score"] for it in body["items"]], want, rtol=1e-5)
        assert body["user_id"] == f"u{user}" and body["model_version"] == published
        assert body["fallback"] is None and body["exact"] is True and body["k"] == 10


def test_recommend_default_k_is_20(client, model):
    assert [i["item_id"] for i in client.get("/recommend/u3").json()["items"]] == expected_topk(
        model, 3, 20
    )


def test_exclude_seen_false_may_return_seen_items(client, model):
    user = max(range(model.arrays.n_users), key=lambda u: len(model.seen[u]))
    ids = [
        i["item_id"]
        for i in client.get(f"/recommend/u{user}?k=50&exclude_seen=false").json()["items"]
    ]
    assert ids == expected_topk(model, user, 50, exclude_seen=False)
    assert {f"i{s}" for s in model.seen[user]} <= set(ids)  # k = n_items: everything comes back


def test_explicit_exclude_list_and_unknown_ids_are_ignored_and_reported(client, model):
    top = expected_topk(model, 0, 3)
    r = client.get(f"/recommend/u0?k=5&exclude={top[0]},{top[2]},nope,,zz")
    body = r.json()
    assert r.status_code == 200
    assert [i["item_id"] for i in body["items"]] == expected_topk(
        model, 0, 5, exclude={int(top[0][1:]), int(top[2][1:])}
    )
    assert body["unknown_exclude"] == ["nope", "zz"]


def test_k_larger_than_catalogue_returns_all_unseen_items(client, model):
    body = client.get("/recommend/u1?k=1000").json()
    assert len(body["items"]) == model.arrays.n_items - len(model.seen[1])


@pytest.mark.parametrize(
    ("query", "msg", "type_", "input_"),
    [
        ("k=0", "Input should be greater than or equal to 1", "greater_than_equal", "0"),
        ("k=1001", "Input should be less than or equal to 1000", "less_than_equal", "1001"),
        (
            "k=abc",
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
            "abc",
        ),
    ],
)
def test_k_out_of_range_is_422_with_the_error_shape(client, query, msg, type_, input_):
    r = client.get(f"/recommend/u0?{query}")
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "validation_error",
            "message": f"query.k: {msg}",
            "details": [{"loc": ["query", "k"], "msg": msg, "type": type_, "input": input_}],
        }
    }


def test_unknown_user_is_404_unknown_user(client):
    r = client.get("/recommend/nobody")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "code": "unknown_user",
            "message": "unknown user_id 'nobody' (add fallback=popular for popular items)",
        }
    }


def test_unknown_user_with_popular_fallback_is_flagged(settings):
    # items 7 and 3 get the most interactions; item 3 is then excluded
    model = make_model(popularity_boost={7: 25, 3: 20, 11: 15})
    publish(settings.registry_root, model)
    with TestClient(create_app(settings)) as c:
        r = c.get("/recommend/newcomer?fallback=popular&k=3&exclude=i3")
        body = r.json()
        pop = model.arrays.item_popularity
        order = [i for i in np.lexsort((np.arange(len(pop)), -pop)).tolist() if i != 3][:3]
        assert r.status_code == 200
        assert body["fallback"] == "popular"
        assert [i["item_id"] for i in body["items"]] == [f"i{i}" for i in order]
        assert [i["score"] for i in body["items"]] == [float(pop[i]) for i in order]
        assert order[0] == 7
        # a known user is never answered by the fallback
        assert c.get("/recommend/u0?fallback=popular").json()["fallback"] is None
        assert 'specrec_fallback_total{kind="popular"} 1.0' in c.get("/metrics").text


def test_unknown_fallback_value_is_422(client):
    r = client.get("/recommend/nobody?fallback=random")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"][0]["loc"] == ["query", "fallback"]


@pytest.mark.parametrize("bad", ["%00x", "a%0Ab", "x" * 257])
def test_malformed_user_id_is_422(client, bad):
    r = client.get(f"/recommend/{bad}")
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert err["details"][0]["loc"] == ["path", "user_id"]


def test_malformed_exclude_id_is_422(client):
    r = client.get("/recommend/u0?exclude=i1,bad%01id")
    msg = "malformed id 'bad\\x01id' (1-256 printable characters)"
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "validation_error",
            "message": f"query.exclude: {msg}",
            "details": [
                {"loc": ["query", "exclude"], "msg": msg, "type": "string_pattern_mismatch"}
            ],
        }
    }


def test_too_many_exclude_ids_is_422(settings, published):
    with TestClient(create_app(settings.model_copy(update={"max_exclude": 2}))) as c:
        r = c.get("/recommend/u0?exclude=a,b,c")
        assert r.status_code == 422
        assert r.json()["error"]["message"] == "query.exclude: at most 2 ids allowed, got 3"
        assert c.get("/recommend/u0?exclude=a,,b,").status_code == 200  # blanks do not count


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_invalid_boolean_is_422(client, value):
    r = client.get(f"/recommend/u0?exclude_seen={value}")
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {
            "loc": ["query", "exclude_seen"],
            "msg": "Input should be a valid boolean, unable to interpret input",
            "type": "bool_parsing",
            "input": value,
        }
    ]


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("0", False), ("No", False)])
def test_boolean_spellings(client, model, value, expected):
    user = max(range(model.arrays.n_users), key=lambda u: len(model.seen[u]))
    ids = [
        i["item_id"]
        for i in client.get(f"/recommend/u{user}?k=50&exclude_seen={value}").json()["items"]
    ]
    assert ids == expected_topk(model, user, 50, exclude_seen=expected)


def test_openapi_documents_the_hot_path_query_parameters(client):
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/recommend/{user_id}"]["get"]["parameters"]
    by_name = {p["name"]: p for p in params}
    assert set(by_name) == {
        "user_id",
        "k",
        "exclude_seen",
        "exclude",
        "fallback",
        "include",
        "offset",
    }
    assert by_name["offset"]["schema"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 999,
        "default": 0,
    }
    assert by_name["k"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 20,
    }
    assert by_name["fallback"]["schema"]["enum"] == ["popular"]
    similar = spec["paths"]["/similar/{item_id}"]["get"]["parameters"]
    assert {p["name"] for p in similar} == {"item_id", "k", "user_id", "include", "offset"}
    assert "ErrorResponse" in spec["components"]["schemas"]


# ---- batch ---------------------------------------------------------------------------------
def test_batch_matches_single_calls_and_reports_unknown_users_per_user(client, model, published):
    users = ["u4", "ghost", "u0", "u4", 2]
    r = client.post("/recommend", json={"user_ids": users, "k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == published and body["k"] == 7
    results = body["results"]
    assert [x["user_id"] for x in results] == ["u4", "ghost", "u0", "u4", "2"]
    for x, user in zip(results, [4, None, 0, 4, None], strict=True):
        if user is None:
            assert x["items"] == [] and x["fallback"] is None
            assert x["error"] == {
                "code": "unknown_user",
                "message": f"unknown user_id {x['user_id']!r}",
            }
        else:
            assert x["error"] is None
            assert [i["item_id"] for i in x["items"]] == expected_topk(model, user, 7)
            single = client.get(f"/recommend/u{user}?k=7").json()["items"]
            assert [i["item_id"] for i in x["items"]] == [i["item_id"] for i in single]
            # GEMM (batch) and GEMV (single) may round the last float32 bit differently
            np.testing.assert_allclose(
                [i["score"] for i in x["items"]], [i["score"] for i in single], rtol=1e-6
            )


def test_batch_uses_one_search_for_all_users(client, model):
    batcher = client.app.state.ctx.batcher
    before = batcher.batches
    users = [f"u{i}" for i in range(model.arrays.n_users)]
    # exclude_seen=false: the precomputed lists (unseen items only) cannot answer, all search
    body = {"user_ids": users, "k": 5, "exclude_seen": False}
    assert client.post("/recommend", json=body).status_code == 200
    assert batcher.batches == before + 1


def test_batch_answers_from_the_precomputed_lists_with_get_items(client, model):
    """POST /recommend looks up what the lists answer (no search), with GET's very items, and
    the answer-source counter counts each user of the batch once."""
    n = model.arrays.n_users
    users = [f"u{i}" for i in range(n)]
    batcher = client.app.state.ctx.batcher
    before = batcher.batches
    r = client.post(
        "/recommend", json={"user_ids": [*users, "ghost"], "k": 10, "fallback": "popular"}
    )
    assert r.status_code == 200 and batcher.batches == before
    results = r.json()["results"]
    for x, user in zip(results, users, strict=False):
        assert x["items"] == client.get(f"/recommend/{user}?k=10").json()["items"]
        assert x["fallback"] is None and x["error"] is None
    assert results[-1]["fallback"] == "popular"
    assert batcher.batches == before  # the GETs were lookups too
    lines = set(client.get("/metrics").text.splitlines())
    assert f'specrec_recommend_answers_total{{source="precomputed"}} {2.0 * n}' in lines
    assert 'specrec_recommend_answers_total{source="fallback"} 1.0' in lines
    assert 'specrec_fallback_total{kind="popular"} 1.0' in lines
    assert not [ln for ln in lines if 'source="search"' in ln]
    # the lists hold unseen items only: exclude_seen=false is searched, and counted so
    body = {"user_ids": users[:3], "k": 10, "exclude_seen": False}
    assert client.post("/recommend", json=body).status_code == 200
    assert batcher.batches == before + 1
    assert 'specrec_recommend_answers_total{source="search"} 3.0' in client.get("/metrics").text


def test_batch_fallback_exclude_and_exclude_seen(client, model):
    top = expected_topk(model, 1, 1, exclude_seen=False)[0]
    r = client.post(
        "/recommend",
        json={
            "user_ids": ["u1", "ghost"],
            "k": 4,
            "exclude_seen": False,
            "exclude": [top, "nope"],
            "fallback": "popular",
        },
    )
    body = r.json()
    assert [i["item_id"] for i in body["results"][0]["items"]] == expected_topk(
        model, 1, 4, exclude_seen=False, exclude={int(top[1:])}
    )
    assert body["results"][1]["fallback"] == "popular" and len(body["results"][1]["items"]) == 4
    assert top not in [i["item_id"] for i in body["results"][1]["items"]]
    assert body["unknown_exclude"] == ["nope"]


@pytest.mark.parametrize(
    ("payload", "loc", "type_"),
    [
        ({"user_ids": []}, ["body", "user_ids"], "too_short"),
        ({"user_ids": ["u0"] * 1001}, ["body", "user_ids"], "too_long"),
        ({"user_ids": ["u0"], "k": 0}, ["body", "k"], "greater_than_equal"),
        ({"user_ids": ["u0"], "k": 1001}, ["body", "k"], "less_than_equal"),
        ({"user_ids": ["u0"], "colour": "red"}, ["body", "colour"], "extra_forbidden"),
        ({"user_ids": [""]}, ["body", "user_ids", 0], "string_too_short"),
        ({"user_ids": [None]}, ["body", "user_ids", 0], "string_type"),
        ({}, ["body"], "value_error"),
        ({"user_ids": ["u0"], "history": ["i0"]}, ["body"], "value_error"),
        ({"history": None}, ["body", "history"], "list_type"),
    ],
)
def test_batch_validation_errors_are_422(client, payload, loc, type_):
    r = client.post("/recommend", json=payload)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert (err["details"][0]["loc"], err["details"][0]["type"]) == (loc, type_)


def test_batch_malformed_json_is_422(client):
    r = client.post(
        "/recommend", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"][0]["type"] == "json_invalid"


# ---- similar -------------------------------------------------------------------------------
def test_similar_is_brute_force_over_item_embeddings_excluding_the_item(client, model):
    items = model.arrays.item_emb.astype(np.float64)
    for row in (0, 17, 49):
        scores = items @ items[row]
        want = [f"i{r}" for r in np.argsort(-scores, kind="stable").tolist() if r != row][:6]
        body = client.get(f"/similar/i{row}?k=6").json()
        assert [i["item_id"] for i in body["items"]] == want
        assert body["item_id"] == f"i{row}" and body["k"] == 6


def test_similar_errors(client):
    r = client.get("/similar/nope")
    assert (r.status_code, r.json()) == (
        404,
        {"error": {"code": "unknown_item", "message": "unknown item_id 'nope'"}},
    )
    assert client.get("/similar/i1?k=0").status_code == 422
    assert client.get("/similar/i1?k=1001").status_code == 422
    assert client.get("/similar/%7F").status_code == 422


def test_recommend_before_any_model_is_503(settings):
    with TestClient(create_app(settings)) as c:
        for r in (
            c.get("/recommend/u0"),
            c.post("/recommend", json={"user_ids": ["u0"]}),
            c.get("/similar/i0"),
            c.get("/health/spectrum"),
        ):
            assert r.status_code == 503
            assert r.json() == {
                "error": {
                    "code": "model_not_ready",
                    "message": "no model is loaded yet; publish one to the registry",
                }
            }


def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    r = client.get("/nope")
    assert (r.status_code, r.json()) == (
        404,
        {"error": {"code": "not_found", "message": "no route GET /nope"}},
    )
    r = client.delete("/recommend/u0")
    assert (r.status_code, r.json()) == (
        405,
        {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}},
    )


def test_malformed_path_id_error_body(client):
    r = client.get("/recommend/a%0Ab")
    assert r.status_code == 422
    pattern = "^[^\\x00-\\x1f\\x7f]+$"
    assert r.json() == {
        "error": {
            "code": "validation_error",
            "message": f"path.user_id: String should match pattern '{pattern}'",
            "details": [
                {
                    "loc": ["path", "user_id"],
                    "msg": f"String should match pattern '{pattern}'",
                    "type": "string_pattern_mismatch",
                    "input": "a\nb",
                }
            ],
        }
    }


def test_responses_are_the_same_without_orjson(client, monkeypatch):
    from service import jsonresp

    with_orjson = client.get("/recommend/u2?k=5").json()
    monkeypatch.setattr(jsonresp, "orjson", None)
    r = client.get("/recommend/u2?k=5")
    assert r.headers["content-type"] == "application/json"
    without = r.json()
    assert [i["item_id"] for i in without["items"]] == [i["item_id"] for i in with_orjson["items"]]
    # float32 scores: shortest float32 text (orjson) vs float64 text (json), same float32
    np.testing.assert_array_equal(
        np.float32([i["score"] for i in without["items"]]),
        np.float32([i["score"] for i in with_orjson["items"]]),
    )
