"""Per-user top lists of an embedding model, written into its artifact at publish.

The same format and meaning as a filter model's (trainer/spectral.py ``ranked_lists``,
contract/artifact.py ``top_rows`` / ``top_scores``): each user's top-L unseen items by the
exact inner product of their vectors, every known pair (the artifact's seen items) left out,
ties by the lower item row, -1 / -inf padding. The service answers a known user's request
with k <= L from them (a lookup) instead of searching, and no service process computes them.

Computed in batches of users: one float32 GEMM per batch (torch, on every core) and a stable
top-L (``stable_topk``). Above ``MAX_CELLS`` users x items the lists are not written (the
publish would take minutes); the service then computes a user's list on first request and
keeps the most recent in a bounded cache (service/precompute.py).
"""

from __future__ import annotations

import numpy as np
import torch

from contract.artifact import ModelArrays
from trainer.spectral import TOP_LIST_LENGTH, ScoreRows, ranked_lists, seen_matrix

MAX_CELLS = 4_000_000_000
"""Largest users x items an embedding model's lists are computed for at publish (about 3x
Gowalla's 1.2e9 cells, under a minute on 2 cores; the service's former limit for computing
them at load); larger models are published without them."""


def inner_product_rows(user_emb: np.ndarray, item_emb: np.ndarray) -> ScoreRows:
    """``score_rows`` for ``ranked_lists``: user rows (B,) -> (B, n) float32 scores
    ``user_emb[rows] @ item_emb.T`` (torch's threaded GEMM)."""
    items = torch.from_numpy(np.ascontiguousarray(item_emb, dtype=np.float32))

    def score_rows(rows: np.ndarray) -> np.ndarray:
        users = torch.from_numpy(np.ascontiguousarray(user_emb[rows], dtype=np.float32))
        return (users @ items.T).numpy()

    return score_rows


def embedding_lists(
    arrays: ModelArrays, length: int = TOP_LIST_LENGTH, *, batch_users: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's top-`length` unseen items by inner product: rows (m, L) int32 and scores
    (m, L) float32, best first, ties by lower row, -1 / -inf padding (L = min(length, n))."""
    score_rows = inner_product_rows(arrays.user_emb, arrays.item_emb)
    return ranked_lists(score_rows, seen_matrix(arrays), length, batch_users=batch_users)


def with_embedding_lists(
    arrays: ModelArrays, length: int = TOP_LIST_LENGTH, max_cells: int = MAX_CELLS
) -> ModelArrays:
    """`arrays` with ``top_rows`` / ``top_scores`` added, or as they are when users x items
    exceeds `max_cells`."""
    if arrays.n_users * arrays.n_items > max_cells:
        return arrays
    rows, scores = embedding_lists(arrays, length)
    return arrays.with_arrays(top_rows=rows, top_scores=scores)
