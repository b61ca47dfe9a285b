"""Searches on the event loop (small catalogues, service.batcher): batched per loop iteration,
run on the loop's thread, and the same answers as the search thread and a numpy reference."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.artifact import LoadedModel
from contract.manifest import Manifest
from service.app import create_app
from service.batcher import SearchBatcher
from service.serving import Search, ServingModel, search_inline
from service.settings import IndexSettings, Settings
from tests.service.modelkit import Model, make_model, publish


class ThreadRecordingIndex:
    """Answers query q with rows [q0 * 10 + j for j < k]; records each call's size and thread."""

    kind, backend, exact, ntotal = "fake", "fake", True, 100

    def __init__(self, scan_cells: int = 200, fail: bool = False) -> None:
        self.scan_cells = scan_cells
        self.fail = fail
        self.calls: list[tuple[int, int]] = []  # (queries, thread id)

    def search(self, queries, ks, banned, **_):
        self.calls.append((len(queries), threading.get_ident()))
        if self.fail:
            raise ValueError("index exploded")
        return [
            (np.arange(k, dtype=np.int64) + int(q[0]) * 10, np.full(k, q[0], np.float32))
            for q, k in zip(queries, ks, strict=True)
        ]


def q(*values: float) -> np.ndarray:
    return np.asarray([[v, 0.0] for v in values], dtype=np.float32)


def run_gathered(batcher: SearchBatcher, index, queries: list[np.ndarray], ks: list[list[int]]):
    """Start one search per entry in the same loop iteration; results and the loop's thread."""

    async def scenario():
        batcher.start()
        try:
            found = await asyncio.gather(
                *(
                    batcher.search(index, qs, k, [None] * len(k))
                    for qs, k in zip(queries, ks, strict=True)
                )
            )
        finally:
            batcher.stop()
        return found, threading.get_ident()

    return asyncio.run(scenario())


def test_searches_of_one_loop_iteration_run_together_on_the_loop_thread():
    index = ThreadRecordingIndex(scan_cells=200)
    batcher = SearchBatcher(inline_max_cells=400)  # the 2-query request reads 400
    found, loop_thread = run_gathered(batcher, index, [q(1), q(2, 3), q(4)], [[2], [3, 1], [1]])
    assert index.calls == [(4, loop_thread)]  # one call, on the event loop's thread
    rows = [[r.tolist() for r, _ in one] for one in found]
    assert rows == [[[10, 11]], [[20, 21, 22], [30]], [[40]]]
    assert (batcher.batches, batcher.queries) == (1, 4)


def test_an_index_above_the_threshold_is_searched_on_the_thread():
    index = ThreadRecordingIndex(scan_cells=201)
    batcher = SearchBatcher(inline_max_cells=200)
    found, loop_thread = run_gathered(batcher, index, [q(5)], [[2]])
    ((n, thread),) = index.calls
    assert n == 1 and thread != loop_thread
    assert found[0][0][0].tolist() == [50, 51]
    assert (batcher.batches, batcher.queries) == (1, 1)


def test_a_request_of_many_queries_goes_to_the_thread():
    """The threshold bounds one request's reads (queries x scan_cells): a batch request of many
    users would hold the event loop for its whole search."""
    index = ThreadRecordingIndex(scan_cells=200)
    batcher = SearchBatcher(inline_max_cells=300)
    found, loop_thread = run_gathered(batcher, index, [q(1, 2)], [[1, 1]])
    ((n, thread),) = index.calls
    assert n == 2 and thread != loop_thread
    assert [r.tolist() for r, _ in found[0]] == [[10], [20]]
    assert batcher.inline(index, 1) and not batcher.inline(index, 2)


def test_inline_batches_are_capped_at_max_queries():
    index = ThreadRecordingIndex()
    batcher = SearchBatcher(max_queries=3, inline_max_cells=10**9)
    found, _ = run_gathered(batcher, index, [q(i) for i in range(7)], [[1]] * 7)
    assert [n for n, _ in index.calls] == [3, 3, 1]
    assert [one[0][0].tolist() for one in found] == [[i * 10] for i in range(7)]


def test_an_inline_search_failure_fails_its_requests_and_the_next_search_runs():
    batcher = SearchBatcher(inline_max_cells=10**9)

    async def scenario():
        batcher.start()
        try:
            results = await asyncio.gather(
                batcher.search(ThreadRecordingIndex(fail=True), q(1), [1], [None]),
                batcher.search(ThreadRecordingIndex(fail=True), q(2), [1], [None]),
                return_exceptions=True,
            )
            ((rows, _),) = await batcher.search(ThreadRecordingIndex(), q(4), [2], [None])
        finally:
            batcher.stop()
        return results, rows.tolist()

    results, rows = asyncio.run(scenario())
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert rows == [40, 41]


# ---- the same answers on the loop, on the thread, and from a numpy reference ---------------


def integer_model() -> Model:
    """Small-integer embeddings (exact float32 scores, many ties) and enough items (4,000) for
    select_topk's slice-maximum path at depths up to 62."""
    rng = np.random.default_rng(7)
    users = rng.integers(-3, 4, (40, 6)).astype(np.float32)
    items = rng.integers(-3, 4, (4000, 6)).astype(np.float32)
    return make_model(user_emb=users, item_emb=items, max_seen=60, seed=7)


def reference_rows(model: Model, user: int, depth: int, banned: set[int]) -> list[int]:
    """Top `depth` rows by inner product (float64), `banned` removed, ties by the lower row."""
    a = model.arrays
    scores = a.item_emb.astype(np.float64) @ a.user_emb[user].astype(np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores)).tolist()
    return [r for r in order if r not in banned][:depth]


CASES = [  # (k, offset, exclude_seen, exclude rows, include rows)
    (20, 0, True, (), None),
    (10, 30, True, (5, 17, 2999), None),
    (40, 0, False, (), None),
    (7, 55, False, (1, 2, 3), None),
    (5, 2, True, (9,), tuple(range(0, 4000, 37))),
]


def answers(model: Model, search: Search, users: list[int], case) -> list[list[tuple]]:
    """Every user's answer to `case`, asked concurrently (one batch when the search batches)."""
    k, offset, exclude_seen, exclude, include = case
    serving = ServingModel.build(
        LoadedModel("v1", Manifest(), model.arrays), IndexSettings(precompute_k=0), search=search
    )
    ids = model.arrays.item_ids

    async def ask():
        found = await asyncio.gather(
            *(
                serving.recommend(
                    (f"u{u}",),
                    k,
                    offset=offset,
                    exclude_seen=exclude_seen,
                    exclude=[ids[r] for r in exclude],
                    include=None if include is None else [ids[r] for r in include],
                )
                for u in users
            )
        )
        return [
            [(r, float(s)) for r, s in zip(a.rows.tolist(), a.scores, strict=True)]
            for recs in found
            for a in recs.answers
        ]

    return asyncio.run(ask())


@pytest.mark.parametrize("case", CASES)
def test_loop_thread_and_direct_searches_equal_the_numpy_reference(case):
    model = integer_model()
    users = list(range(0, 40, 3))
    inline, thread = SearchBatcher(inline_max_cells=10**9), SearchBatcher(inline_max_cells=0)

    def through(batcher: SearchBatcher):
        async def search(index, queries, ks, banned):
            batcher.start()  # idempotent; stopped below
            return await batcher.search(index, queries, ks, banned)

        return search

    try:
        got_inline = answers(model, through(inline), users, case)
        got_thread = answers(model, through(thread), users, case)
    finally:
        inline.stop()
        thread.stop()
    got_direct = answers(model, search_inline, users, case)
    assert inline.queries == thread.queries == (len(users) if case[4] is None else 0)
    if case[4] is None:
        assert inline.batches == 1  # the concurrent requests were searched together
    assert got_inline == got_thread == got_direct
    k, offset, exclude_seen, exclude, include = case
    a = model.arrays
    for u, got in zip(users, got_inline, strict=True):
        banned = (model.seen[u] if exclude_seen else set()) | set(exclude)
        if include is not None:
            banned |= set(range(a.n_items)) - set(include)
        want = reference_rows(model, u, offset + k, banned)[offset:]
        assert [r for r, _ in got] == want
        np.testing.assert_array_equal(
            [s for _, s in got], (a.item_emb[want] @ a.user_emb[u]).astype(np.float32)
        )


@pytest.mark.parametrize("inline_cells", [0, 10**9])
def test_the_service_answers_the_same_on_the_loop_and_on_the_thread(tmp_path, inline_cells):
    """GET /recommend, /similar and POST /recommend (a history fold-in) through the app, with
    the setting on either side of the catalogue's scan (4,000 x 6 cells): the reference's items."""
    model = integer_model()
    settings = Settings(
        home=tmp_path, watch=False, precompute_k=0, inline_search_max_cells=inline_cells
    )
    publish(settings.registry_root, model)
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.ctx.batcher
        assert batcher.inline(client.app.state.ctx.state.require().index) == bool(inline_cells)
        r = client.get("/recommend/u4?k=6&offset=3&exclude=i10,i11")
        assert r.status_code == 200, r.text
        got = [it["item_id"] for it in r.json()["items"]]
        want = reference_rows(model, 4, 9, model.seen[4] | {10, 11})[3:]
        assert got == [f"i{w}" for w in want]
        assert [it["rank"] for it in r.json()["items"]] == [4, 5, 6, 7, 8, 9]
        r = client.get("/similar/i3?k=4")
        assert r.status_code == 200, r.text
        items = model.arrays.item_emb.astype(np.float64)
        scores = items @ items[3]
        ranked = [x for x in np.lexsort((np.arange(len(scores)), -scores)).tolist() if x != 3]
        assert [it["item_id"] for it in r.json()["items"]] == [f"i{x}" for x in ranked[:4]]
        r = client.post("/recommend", json={"history": ["i1", "i2"], "k": 3})
        assert r.status_code == 200, r.text
        (entry,) = r.json()["results"]
        assert entry["source"] == "fold-in" and len(entry["items"]) == 3
        assert not {"i1", "i2"} & {it["item_id"] for it in entry["items"]}
        assert (batcher.batches, batcher.queries) == (3, 3)
