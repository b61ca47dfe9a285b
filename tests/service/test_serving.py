"""ServingModel.recommend / .similar against a numpy reference: the top lists (the artifact's, or
cached from first searches), the search and the popular fallback give the reference's answer,
and lookups answer what searches would."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from contract.artifact import LoadedModel
from contract.manifest import Manifest, parse_manifest
from service.precompute import CachedLists, TopLists
from service.serving import Answer, Recommendations, Search, ServingModel, search_inline
from service.settings import Settings
from tests.service.modelkit import Model, make_model, with_top_lists

K = 12  # top list length of the models below


def reference(
    model: Model, user: int, k: int, exclude_seen: bool = True, exclude: Sequence[int] = ()
) -> tuple[list[int], np.ndarray]:
    """Exact top-k rows by inner product (float64), seen/excluded rows removed, ties broken by
    the lower row; and their scores."""
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    banned = (model.seen[user] if exclude_seen else set()) | set(exclude)
    rows = [r for r in np.lexsort((np.arange(len(scores)), -scores)).tolist() if r not in banned]
    return rows[:k], scores[rows[:k]]


def popular_reference(model: Model, k: int, exclude: Sequence[int] = ()) -> list[int]:
    pop = model.arrays.item_popularity
    ranked = np.lexsort((np.arange(len(pop)), -pop)).tolist()
    return [r for r in ranked if r not in set(exclude)][:k]


def serve(
    model: Model,
    precompute_k: int,
    settings: Settings,
    search: Search = search_inline,
    stored: bool = True,
) -> ServingModel:
    """`model` served with lookups to depth `precompute_k` (0: none): from top lists in its
    artifact (`stored`, as the trainer writes them) or cached from first searches."""
    config = settings.model_copy(update={"precompute_k": precompute_k})
    arrays = with_top_lists(model, precompute_k).arrays if stored and precompute_k else model.arrays
    return ServingModel.build(LoadedModel("v1", Manifest(), arrays), config, search=search)


def integer_model(n_users: int = 25, n_items: int = 400, seed: int = 1) -> Model:
    """Embeddings of small integers: float32 scores are exact, and many items tie."""
    rng = np.random.default_rng(seed)
    users = rng.integers(-2, 3, (n_users, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (n_items, 4)).astype(np.float32)
    return make_model(user_emb=users, item_emb=items, max_seen=30, seed=seed)


class SpySearch:
    """search_inline that records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # queries per call

    async def __call__(self, index, queries, ks, banned):
        self.calls.append(len(queries))
        return await search_inline(index, queries, ks, banned)


def recommend(serving: ServingModel, users: Sequence[str], k: int, **kw) -> Recommendations:
    return asyncio.run(serving.recommend(users, k, **kw))


def one(serving: ServingModel, user: str, k: int, **kw) -> Answer:
    (answer,) = recommend(serving, (user,), k, **kw).answers
    return answer


MODELS = {
    "gaussian": lambda: make_model(n_users=25, n_items=80, max_seen=12, seed=5),
    "integer-ties": integer_model,
}


@pytest.fixture(params=sorted(MODELS))
def model(request) -> Model:
    return MODELS[request.param]()


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_every_source_gives_the_reference_answer(settings, model, exclude_seen):
    with_lists, without = serve(model, K, settings), serve(model, 0, settings)
    cached = serve(model, K, settings, stored=False)  # a model without lists: filled as asked
    assert isinstance(with_lists.top_lists, TopLists) and without.top_lists is None
    assert isinstance(cached.top_lists, CachedLists) and cached.top_lists.size == 0
    rng = np.random.default_rng(0)
    n = model.arrays.n_items
    for user in range(model.arrays.n_users):
        for k in (1, 5, K, K + 1, 3 * K, 2, 5):  # 2 and 5 again: from the cached list
            excl = sorted(rng.choice(n, size=int(rng.integers(0, 6)), replace=False).tolist())
            if k == 1:
                excl = []  # the first request of each user fills its cached list
            want, want_scores = reference(model, user, k, exclude_seen, excl)
            args = {"exclude": [f"i{e}" for e in excl], "exclude_seen": exclude_seen}
            looked_up = one(with_lists, f"u{user}", k, **args)
            searched = one(without, f"u{user}", k, **args)
            from_cache = one(cached, f"u{user}", k, **args)
            assert searched.source == "search"
            # the first request of a user searches and fills its list; then it decides like
            # the artifact's list (the same items)
            assert from_cache.source == ("search" if k == 1 else looked_up.source)
            if exclude_seen and k <= K and not excl:
                assert looked_up.source == "precomputed"
            for answer in (looked_up, searched, from_cache):
                assert answer.rows.tolist() == want, (user, k, excl, answer.source)
                np.testing.assert_allclose(answer.scores, want_scores, rtol=1e-5, atol=1e-5)
                assert answer.rows.dtype == np.int64 and answer.scores.dtype == np.float32
                assert answer.fallback is None
            if k > K or not exclude_seen:  # the lists hold K unseen items: they cannot answer
                assert looked_up.source == "search"


def test_lookups_answer_whenever_the_list_proves_the_answer(settings):
    model = make_model(n_users=25, n_items=80, max_seen=12, seed=5)
    spy = SpySearch()
    serving = serve(model, K, settings, search=spy)  # the model holds its searcher
    users = [f"u{u}" for u in range(25)]
    recs = recommend(serving, users, K)
    assert [a.source for a in recs.answers] == ["precomputed"] * 25 and spy.calls == []
    # dropping 3 of a user's listed items leaves K - 3 < k = K: that user is searched
    listed = serving.top_lists.rows[0, :3].tolist()
    recs = recommend(serving, users, K, exclude=[f"i{r}" for r in listed])
    sources = [a.source for a in recs.answers]
    assert spy.calls == [sources.count("search")] and sources.count("search") >= 1
    for u, answer in enumerate(recs.answers):
        assert answer.rows.tolist() == reference(model, u, K, exclude=listed)[0]


def test_integer_ties_at_the_cut_go_to_the_lower_rows(settings):
    model = integer_model()
    a = model.arrays
    serving = serve(model, 0, settings)
    straddling = 0  # cases where an item left out scores the same as the k-th
    for user in range(a.n_users):
        for k in (1, 3, 7, 20):  # n = 400 >= 64k for k <= 6: the sampled-threshold path too
            want, want_scores = reference(model, user, k)
            assert one(serving, f"u{user}", k).rows.tolist() == want
            left_out = reference(model, user, a.n_items)[1][k:]
            straddling += bool(len(left_out)) and left_out[0] == want_scores[-1]
    assert straddling > 50  # of 100: the test is about ties


def test_popular_fallback_for_unknown_users_only(settings):
    model = make_model(popularity_boost={7: 25, 3: 20, 11: 15})
    serving = serve(model, K, settings)
    answer = one(serving, "newcomer", 3, fallback="popular", exclude=["i3"])
    assert answer.source == "fallback" and answer.fallback == "popular" and answer.answered
    assert answer.rows.tolist() == popular_reference(model, 3, exclude=[3])
    assert answer.rows.tolist()[0] == 7
    pop = model.arrays.item_popularity
    assert answer.scores.tolist() == [float(pop[r]) for r in answer.rows]
    known = one(serving, "u0", 3, fallback="popular")
    assert known.source == "precomputed" and known.fallback is None
    assert known.rows.tolist() == reference(model, 0, 3)[0]
    missing = one(serving, "newcomer", 3)
    assert not missing.answered and missing.source is None and missing.fallback is None
    assert len(missing.rows) == 0 and len(missing.scores) == 0


def test_unknown_exclude_ids_are_ignored_and_listed_in_order(settings):
    model = make_model()
    serving = serve(model, K, settings)
    top = reference(model, 0, 2)[0]
    recs = recommend(serving, ["u0"], 5, exclude=[f"i{top[0]}", "nope", f"i{top[0]}", "zz"])
    assert recs.unknown_exclude == ["nope", "zz"]
    assert recs.answers[0].rows.tolist() == reference(model, 0, 5, exclude=[top[0]])[0]
    assert recommend(serving, ["u0"], 5).unknown_exclude == []
    only_unknown = recommend(serving, ["u0"], 5, exclude=["nope"])
    assert only_unknown.answers[0].rows.tolist() == reference(model, 0, 5)[0]


@pytest.mark.parametrize("k", [4, K + 5])
def test_a_batch_mixing_known_and_unknown_users(settings, k):
    model = make_model()
    spy = SpySearch()
    serving = serve(model, K, settings, search=spy)
    users = ["u4", "ghost", "u0", "u4", "2", "u9"]
    recs = recommend(serving, users, k, exclude=["i1", "nope"], fallback="popular")
    assert len(recs.answers) == len(users) and recs.unknown_exclude == ["nope"]
    # k within the lists: no search at all; above: one search for the four known users
    assert spy.calls == ([] if k <= K else [4])
    for user, answer in zip(users, recs.answers, strict=True):
        if user in ("ghost", "2"):
            assert (answer.source, answer.fallback) == ("fallback", "popular")
            assert answer.rows.tolist() == popular_reference(model, k, exclude=[1])
        else:
            assert answer.source == ("precomputed" if k <= K else "search")
            assert answer.rows.tolist() == reference(model, int(user[1:]), k, exclude=[1])[0]
            single = one(serving, user, k, exclude=["i1"])
            assert answer.rows.tolist() == single.rows.tolist()
    without = recommend(serving, users, k, exclude=["i1"])
    assert [a.answered for a in without.answers] == [True, False, True, True, False, True]


def test_invalid_arguments_raise(settings):
    serving = serve(make_model(), K, settings)
    with pytest.raises(ValueError, match="k must be"):
        recommend(serving, ["u0"], 0)
    with pytest.raises(ValueError, match="fallback"):
        recommend(serving, ["u0"], 5, fallback="random")
    with pytest.raises(ValueError, match="k must be"):
        asyncio.run(serving.similar("i0", 0))


def test_similar_is_the_reference_over_items_without_the_item(settings):
    model = make_model()
    serving = serve(model, K, settings)
    items = model.arrays.item_emb.astype(np.float64)
    for row in (0, 17, 49):
        scores = items @ items[row]
        want = [r for r in np.lexsort((np.arange(len(scores)), -scores)).tolist() if r != row]
        answer = asyncio.run(serving.similar(f"i{row}", 6))
        assert answer.source == "search" and answer.rows.tolist() == want[:6]
    missing = asyncio.run(serving.similar("nope", 6))
    assert not missing.answered and len(missing.rows) == 0


def test_the_spectrum_is_read_from_the_manifest_not_recomputed(settings):
    """The trainer computed it once; the service reads it (a marker value proves which)."""
    from contract.spectrum import embedding_spectrum

    model = make_model()
    a = model.arrays
    computed = embedding_spectrum(a.user_emb, a.item_emb)
    marked = {part: {kind: dict(s) for kind, s in v.items()} for part, v in computed.items()}
    marked["all"]["normalized"]["effective_rank"] = 12.345
    config = settings.model_copy(update={"precompute_k": 0})
    served = ServingModel.build(LoadedModel("v1", parse_manifest({"spectrum": marked}), a), config)
    assert served.spectrum.spectrum["all"]["normalized"]["effective_rank"] == 12.345
    # an artifact published without a (complete) spectrum gets one computed here
    for manifest in ({}, {"spectrum": {}}, {"spectrum": {"users": {"raw": {}}}}):
        served = ServingModel.build(LoadedModel("v1", parse_manifest(manifest), a), config)
        got = served.spectrum.spectrum["all"]["normalized"]["effective_rank"]
        assert got == pytest.approx(computed["all"]["normalized"]["effective_rank"])
    assert served.spectrum.rows == {
        "users": a.n_users,
        "items": a.n_items,
        "all": a.n_users + a.n_items,
    }


def test_the_model_holds_its_searcher(settings):
    """A model searches through the Search it was built with (the service: its batcher), bound
    to its own index: callers no longer hand one in."""
    model = make_model()
    spy = SpySearch()
    serving = serve(model, 0, settings, search=spy)
    answer = asyncio.run(serving.similar("i3", 5))
    assert spy.calls == [1] and answer.source == "search"
    items = model.arrays.item_emb
    scores = items @ items[3]
    want = [r for r in np.lexsort((np.arange(len(scores)), -scores)).tolist() if r != 3][:5]
    assert answer.rows.tolist() == want
    recs = recommend(serving, ["u0", "u1"], 4)
    assert spy.calls == [1, 2] and [a.source for a in recs.answers] == ["search"] * 2


def test_the_apps_models_search_through_its_batcher(client):
    batcher = client.app.state.ctx.batcher
    before = (batcher.batches, batcher.queries)
    r = client.get("/similar/i1?k=3")
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert (batcher.batches, batcher.queries) == (before[0] + 1, before[1] + 1)
