"""Searches batched across concurrent requests: on one worker thread, or on the event loop.

Concurrent requests that arrive while a search runs are searched together in the next call
(one GEMM / one FAISS search for all of them), which turns many memory-bound matrix-vector
products into one compute-bound matrix product. Nothing waits for a batch to fill: a lone
request is searched immediately. The worker sets its own FAISS OpenMP thread count, so
``faiss_threads`` bounds the cores one search uses whatever the request concurrency.

A request whose search reads little (queries × ``ItemIndex.scan_cells`` at most
``inline_max_cells``, the ``inline_search_max_cells`` setting: one user of a small catalogue)
is searched on the event loop instead: the queries of every such request that reaches its search
in one loop iteration are searched together in one callback right after it. That
skips the hand-off to the thread and back (two cross-thread wake-ups, which cost more than the
scan of a small catalogue), and still batches: requests that arrive while a search runs wait in
their sockets, and the next iteration takes all of them.
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
    """Owns the search thread and the event-loop batches.
    ``await batcher.search(index, queries, ks, banned)``."""

    def __init__(self, max_queries: int = 256, threads: int = 1, inline_max_cells: int = 0) -> None:
        self.max_queries = max_queries
        self.threads = threads
        self.inline_max_cells = inline_max_cells
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # inline, this iteration
        self._counts = [0, 0]  # searches and queries run by the thread
        self._inline_counts = [0, 0]  # the same on event loops (each counter has one writer)

    @property
    def batches(self) -> int:
        """Searches run, on the thread or inline (for tests and metrics)."""
        return self._counts[0] + self._inline_counts[0]

    @property
    def queries(self) -> int:
        """Queries answered by those searches."""
        return self._counts[1] + self._inline_counts[1]

    def inline(self, index: ItemIndex, queries: int = 1) -> bool:
        """Whether a search of `queries` on `index` runs on the event loop (it reads at most
        ``inline_max_cells`` numbers: a batch request of many users goes to the thread)."""
        return queries * index.scan_cells <= self.inline_max_cells

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        set_search_threads(self.threads)  # for the searches run inline on the calling loop
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
        job = _Job(index, queries, ks, banned, loop, future)
        if self.inline(index, len(queries)):
            pending = self._pending.setdefault(loop, [])
            if not pending:  # the first search of this iteration: run them all at its end
                loop.call_soon(self._flush, loop)
            pending.append(job)
        else:
            self._queue.put(job)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on `loop`: search every job queued there in this iteration, deliver at once."""
        jobs = self._pending.pop(loop, [])
        while jobs:
            take, total = 0, 0
            while take < len(jobs) and (take == 0 or total < self.max_queries):
                total += len(jobs[take].queries)
                take += 1
            for items in self._execute(jobs[:take], self._inline_counts).values():
                _deliver(items)
            jobs = jobs[take:]

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
            for loop, items in self._execute(jobs, self._counts).items():
                try:
                    loop.call_soon_threadsafe(_deliver, items)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass
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

    @staticmethod
    def _execute(
        jobs: list[_Job], counts: list[int]
    ) -> dict[asyncio.AbstractEventLoop, list[Outcome]]:
        """Search `jobs` (one call per index), count them in `counts`; the outcomes per loop."""
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
                counts[0] += 1
                counts[1] += len(results)
                start = 0
                for j in group:
                    outcome = results[start : start + len(j.queries)]
                    outcomes.setdefault(j.loop, []).append((j.future, outcome))
                    start += len(j.queries)
            except Exception as e:  # a search failure fails its requests, not the thread
                log.exception("search failed")
                for j in group:
                    outcomes.setdefault(j.loop, []).append((j.future, e))
        return outcomes
