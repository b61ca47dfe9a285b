"""The search thread: queued searches are coalesced, results split per request, errors isolated."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batcher import SearchBatcher


class RecordingIndex:
    """Answers query q with rows [q0 * 10 + j for j < k]; can hold the first call until released."""

    kind, backend, exact, ntotal, scan_cells = "fake", "fake", True, 100, 200

    def __init__(self, hold_first: bool = False, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.hold_first, self.fail = hold_first, fail

    def search(self, queries, ks, banned, **_):
        self.calls.append(len(queries))
        if self.hold_first and len(self.calls) == 1:
            self.entered.set()
            self.release.wait(10)
        if self.fail:
            raise ValueError("index exploded")
        return [
            (np.arange(k, dtype=np.int64) + int(q[0]) * 10, np.zeros(k, np.float32))
            for q, k in zip(queries, ks, strict=True)
        ]


def q(*values: float) -> np.ndarray:
    return np.asarray([[v, 0.0] for v in values], dtype=np.float32)


def test_queued_searches_are_coalesced_into_one_call_and_split_back():
    async def scenario():
        batcher = SearchBatcher(max_queries=64)
        batcher.start()
        index = RecordingIndex(hold_first=True)
        try:
            first = asyncio.ensure_future(batcher.search(index, q(1), [2], [np.empty(0)]))
            await asyncio.to_thread(index.entered.wait, 10)  # worker busy with the first
            rest = [
                asyncio.ensure_future(batcher.search(index, q(i, i + 0.5), [3, 1], [None, None]))
                for i in range(2, 7)
            ]
            await asyncio.sleep(0.05)
            index.release.set()
            results = [await first] + [await r for r in rest]
        finally:
            batcher.stop()
        return index.calls, results, batcher.batches

    calls, results, batches = asyncio.run(scenario())
    assert calls == [1, 10]  # the five 2-query requests went in one call
    assert batches == 2
    assert [r.tolist() for r, _ in results[0]] == [[10, 11]]
    for i, res in zip(range(2, 7), results[1:], strict=True):
        assert [r.tolist() for r, _ in res] == [[i * 10, i * 10 + 1, i * 10 + 2], [i * 10]]


def test_batch_size_is_capped_by_max_queries():
    async def scenario():
        batcher = SearchBatcher(max_queries=3)
        batcher.start()
        index = RecordingIndex(hold_first=True)
        try:
            first = asyncio.ensure_future(batcher.search(index, q(0), [1], [None]))
            await asyncio.to_thread(index.entered.wait, 10)
            rest = [
                asyncio.ensure_future(batcher.search(index, q(i), [1], [None])) for i in range(7)
            ]
            await asyncio.sleep(0.05)
            index.release.set()
            await first
            await asyncio.gather(*rest)
        finally:
            batcher.stop()
        return index.calls

    assert asyncio.run(scenario()) == [1, 3, 3, 1]


def test_a_failing_search_fails_its_request_and_the_thread_survives():
    async def scenario():
        batcher = SearchBatcher()
        batcher.start()
        try:
            with pytest.raises(ValueError, match="index exploded"):
                await batcher.search(RecordingIndex(fail=True), q(1), [1], [None])
            ((rows, _),) = await batcher.search(RecordingIndex(), q(4), [2], [None])
            return rows.tolist(), batcher.running
        finally:
            batcher.stop()

    assert asyncio.run(scenario()) == ([40, 41], True)


def test_searches_of_two_models_in_one_drain_go_to_their_own_index():
    async def scenario():
        batcher = SearchBatcher()
        batcher.start()
        old, new = RecordingIndex(hold_first=True), RecordingIndex()
        try:
            first = asyncio.ensure_future(batcher.search(old, q(1), [1], [None]))
            await asyncio.to_thread(old.entered.wait, 10)
            a = asyncio.ensure_future(batcher.search(old, q(2), [1], [None]))
            b = asyncio.ensure_future(batcher.search(new, q(3), [1], [None]))
            await asyncio.sleep(0.05)
            old.release.set()
            await first
            return (await a)[0][0].tolist(), (await b)[0][0].tolist(), old.calls, new.calls
        finally:
            batcher.stop()

    assert asyncio.run(scenario()) == ([20], [30], [1, 1], [1])


def test_search_requires_a_started_batcher():
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(SearchBatcher().search(RecordingIndex(), q(1), [1], [None]))
