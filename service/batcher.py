"""Searches run off the event loop on one worker thread that batches whatever is queued.

Concurrent requests that arrive while a search runs are searched together in the next call
(one GEMM / one FAISS search for all of them), which turns many memory-bound matrix-vector
products into one compute-bound matrix product. Nothing waits for a batch to fill: a lone
request is searched immediately. The worker sets its own FAISS OpenMP thread count, so
``faiss_threads`` bounds the cores one search uses whatever the request concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.index import ItemIndex, set_search_threads
from service.topk import Ranked

log = logging.getLogger("specrec.service.batcher")


@dataclass(eq=False)
class _Job:
    index: ItemIndex
    queries: np.ndarray  # (q, d) float32
    ks: Sequence[int]
    banned: Sequence[np.ndarray]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Ranked]]


Outcome = tuple["asyncio.Future[list[Ranked]]", "list[Ranked] | BaseException"]


def _deliver(outcomes: list[Outcome]) -> None:
    """Runs on the event loop: resolve every future of one batch (one wake-up per batch)."""
    for future, outcome in outcomes:
        if future.done():  # the request was cancelled (client went away)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_STOP = object()


class SearchBatcher:
    """Owns the search thread. ``await batcher.search(index, queries, ks, banned)``."""

    def __init__(self, max_queries: int = 256, threads: int = 1) -> None:
        self.max_queries = max_queries
        self.threads = threads
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0  # searches run (for tests and metrics)
        self.queries = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._run, name="specrec-search", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued searches, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    async def search(
        self,
        index: ItemIndex,
        queries: np.ndarray,
        ks: Sequence[int],
        banned: Sequence[np.ndarray],
    ) -> list[Ranked]:
        """Results for `queries` (q, d), searched on the worker thread with whatever else is
        queued; each result is (rows, scores) best first."""
        if not self.running:
            raise RuntimeError("SearchBatcher is not running (start it in the app lifespan)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Ranked]] = loop.create_future()
        self._queue.put(_Job(index, queries, ks, banned, loop, future))
        return await future

    # ---- worker --------------------------------------------------------------------------
    def _run(self) -> None:
        set_search_threads(self.threads)
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Job)
            jobs, total = [item], len(item.queries)
            while total < self.max_queries:  # take what is already queued, never wait
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                assert isinstance(nxt, _Job)
                jobs.append(nxt)
                total += len(nxt.queries)
            self._execute(jobs)
        while True:  # anything queued after stop() fails instead of hanging its request
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                failed: list[Outcome] = [(item.future, RuntimeError("search worker stopped"))]
                try:
                    item.loop.call_soon_threadsafe(_deliver, failed)
                except RuntimeError:
                    pass

    def _execute(self, jobs: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in jobs:  # normally one group; two while a hot swap is in progress
            groups.setdefault(id(job.index), []).append(job)
        outcomes: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for group in groups.values():
            try:
                if len(group) == 1:
                    j = group[0]
                    results = j.index.search(j.queries, j.ks, j.banned)
                else:
                    queries = np.concatenate([j.queries for j in group])
                    ks = [k for j in group for k in j.ks]
                    banned = [b for j in group for b in j.banned]
                    results = group[0].index.search(queries, ks, banned)
                self.batches += 1
                self.queries += len(results)
                start = 0
                for j in group:
                    outcome = results[start : start + len(j.queries)]
                    outcomes.setdefault(j.loop, []).append((j.future, outcome))
                    start += len(j.queries)
            except Exception as e:  # a search failure fails its requests, not the thread
                log.exception("search failed")
                for j in group:
                    outcomes.setdefault(j.loop, []).append((j.future, e))
        for loop, items in outcomes.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass
