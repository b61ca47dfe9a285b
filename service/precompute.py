"""Per-user top-K lists computed when a model loads, so common requests skip the search.

A model is immutable, so each user's best K unseen items are fixed for its lifetime. Computing
them once (batched, on the loader thread, off the request path) turns a recommendation with
k <= K and seen items excluded (``GET /recommend/{user}``, and each user of ``POST /recommend``)
into an array lookup on the event loop, leaving the CPU to the HTTP work (bench/serve_http.py
measures both ways). ``ServingModel.recommend`` decides when a list answers. Answers are the
same as the search path's: the lists come from the same index with the same exclusion and
ordering, and a top-k is a prefix of the top-K (service.topk breaks ties at the cut by row).

A list also answers requests with an extra ``exclude`` as long as k items survive the filter,
or when the list already holds every unseen item (then nothing else could qualify).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.artifact import ModelArrays
from service.index import ItemIndex


@dataclass(frozen=True)
class TopLists:
    rows: np.ndarray  # (m, K) int32, best first; -1 pads short lists
    scores: np.ndarray  # (m, K) float32
    lengths: np.ndarray  # (m,) int32: valid entries per user
    complete: np.ndarray  # (m,) bool: the list holds every unseen item of that user

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])

    def answer(
        self, user: int, k: int, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, scores) for k items not in `exclude` (sorted unique rows), or None when the
        list cannot prove it holds the answer (then the caller searches)."""
        if k > self.k:
            return None
        n = int(self.lengths[user])
        rows, scores = self.rows[user, :n], self.scores[user, :n]
        if len(exclude):
            keep = ~np.isin(rows, exclude, assume_unique=True)
            rows, scores = rows[keep], scores[keep]
        if len(rows) < k and not self.complete[user]:
            return None
        return rows[:k].astype(np.int64), scores[:k]


def precompute(index: ItemIndex, arrays: ModelArrays, k: int, chunk: int = 256) -> TopLists:
    """Top-k unseen items of every user through `index` (exact for flat). O(m·n·d) work."""
    m, n = arrays.n_users, arrays.n_items
    k = max(1, min(k, n))
    rows = np.full((m, k), -1, dtype=np.int32)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(m, dtype=np.int32)
    n_seen = np.diff(arrays.seen_indptr)
    for start in range(0, m, chunk):
        users = range(start, min(start + chunk, m))
        banned = [arrays.seen(u).astype(np.int64) for u in users]
        found = index.search(arrays.user_emb[start : start + len(users)], [k] * len(users), banned)
        for u, (r, s) in zip(users, found, strict=True):
            rows[u, : len(r)] = r
            scores[u, : len(s)] = s
            lengths[u] = len(r)
    complete = lengths >= (n - n_seen) if index.exact else np.zeros(m, dtype=bool)
    return TopLists(rows, scores, lengths, complete)


def stored_lists(arrays: ModelArrays) -> TopLists | None:
    """The lists a model's artifact carries (``top_rows``/``top_scores``, written by the
    trainer for a filter model), or None when it has none."""
    if arrays.top_rows is None or arrays.top_scores is None:
        return None
    rows = arrays.top_rows.astype(np.int32, copy=False)
    lengths = (rows >= 0).sum(axis=1).astype(np.int32)
    n_seen = np.diff(arrays.seen_indptr)
    complete = lengths >= (arrays.n_items - n_seen)
    return TopLists(rows, arrays.top_scores.astype(np.float32, copy=False), lengths, complete)
