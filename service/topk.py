"""Top-k selection with excluded rows: pure numpy functions used by every search backend.

Order contract: results are sorted by score descending, ties broken by item row ascending. When
several items tie at the k-th score, which of them make the cut is unspecified (any of them is a
correct top-k).
"""

from __future__ import annotations

import numpy as np

Ranked = tuple[np.ndarray, np.ndarray]
"""(rows (k,) int64, scores (k,) float32), best first."""

_EMPTY: Ranked = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))


def order(rows: np.ndarray, scores: np.ndarray) -> Ranked:
    """Sort candidates by (score desc, row asc). rows, scores: (c,) -> (c,), (c,)."""
    perm = np.lexsort((rows, -scores))
    return rows[perm].astype(np.int64, copy=False), scores[perm].astype(np.float32, copy=False)


def select_topk(scores: np.ndarray, k: int, banned: np.ndarray) -> Ranked:
    """Top-k rows of one dense score vector, never a banned row.

    scores: (n,) float32, MODIFIED in place (banned rows set to -inf; pass a scratch buffer).
    banned: (b,) unique int rows in [0, n). Returns min(k, n - b) results.
    """
    n = scores.shape[0]
    if len(banned):
        scores[banned] = -np.inf
    k = min(k, n - len(banned))
    if k <= 0:
        return _EMPTY
    if k >= n:
        rows = np.arange(n, dtype=np.int64)
    elif n >= _SAMPLE_STRIDE * 4 * k:
        rows = _topk_by_threshold(scores, k)
    else:
        rows = np.argpartition(scores, n - k)[n - k :]
    return order(rows, scores[rows])


_SAMPLE_STRIDE = 16


def _topk_by_threshold(scores: np.ndarray, k: int) -> np.ndarray:
    """Unordered top-k rows of scores (n,), exact, ~3x faster than argpartition for k << n.

    The k-th largest of every 16th score is a lower bound that at least k scores reach (the
    sample is part of the row), so the top k are among the ~16k rows at or above it.
    """
    sample = scores[::_SAMPLE_STRIDE]
    m = len(sample)
    bound = np.partition(sample, m - k)[m - k]
    if not np.isfinite(bound):  # the sample is mostly banned rows (-inf): no useful bound
        return np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    cand = np.flatnonzero(scores >= bound)
    return cand[np.argpartition(scores[cand], len(cand) - k)[len(cand) - k :]]


def filter_ranked(rows: np.ndarray, scores: np.ndarray, k: int, banned: np.ndarray) -> Ranked:
    """First k of an index's ranked answer after dropping padding (-1) and banned rows.

    rows, scores: (k_fetch,) as returned by FAISS for one query; banned: (b,) int rows.
    The caller fetches k + b candidates, so k survive whenever the catalogue allows it.
    """
    keep = rows >= 0
    if len(banned):
        keep &= ~np.isin(rows, banned)
    rows, scores = rows[keep][:k], scores[keep][:k]
    return order(rows, scores)
