"""Fit and evaluate the training-free spectral filter (contract/spectral.py) on a Dataset.

Fitting is one truncated SVD of R̃ (scipy's ARPACK ``svds``; a dense SVD for small
matrices); there are no epochs. Evaluation ranks every test user by the filter's own scores
(the service's scores), with the same full-ranking metrics as the embedding models
(trainer/evaluate.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds

from contract.artifact import ModelArrays
from contract.config import TrainConfig
from contract.spectral import SpectralFilter, normalized_matrix
from trainer.data import Dataset
from trainer.evaluate import _binary_csr, _check_args, _ranking_metrics

DENSE_SVD_UP_TO = 2000
"""Below this many rows or columns, R̃'s SVD is computed densely (exact, deterministic)."""
RANDOMIZED_OVERSAMPLE = 64
"""Extra random probes of the randomized SVD beyond the K vectors it keeps."""


def top_singular(
    norm: sp.csr_matrix, k: int, seed: int, solver: str = "randomized"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k right singular vectors (n, k') and values (k',) of `norm`, values descending;
    k' = min(k, rank bound). Dense SVD for small matrices; otherwise ``solver``:
    "randomized" (torch.svd_lowrank: k + 64 random probes, 4 power iterations, seeded; BLAS-3
    products on both cores) or "arpack" (scipy's svds: exact to its tolerance, one sparse
    product at a time)."""
    m, n = norm.shape
    small = min(m, n)
    if small <= DENSE_SVD_UP_TO or k >= small - 1:
        _, s, vt = np.linalg.svd(norm.toarray().astype(np.float64), full_matrices=False)
        k = min(k, len(s))
        return vt[:k].T.copy(), s[:k].copy()
    if solver == "randomized":
        coo = norm.tocoo()
        a = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
            torch.from_numpy(coo.data.astype(np.float32)),
            size=norm.shape,
        ).coalesce()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s_t, v_t = torch.svd_lowrank(a, q=min(k + RANDOMIZED_OVERSAMPLE, small), niter=4)
        return v_t[:, :k].double().numpy().copy(), s_t[:k].double().numpy().copy()
    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, size=small)
    _, s, vt = svds(norm.astype(np.float64), k=k, v0=v0, solver="arpack")
    order = np.argsort(-s, kind="stable")
    return vt[order].T.copy(), s[order].copy()


def fit_filter(
    train: sp.csr_matrix, k: int, alpha: float, seed: int = 0, solver: str = "randomized"
) -> SpectralFilter:
    """The GF-CF filter of a binary (m, n) training matrix: R̃, its top-k right singular
    vectors (top_singular's `solver`) and the low-pass weight `alpha`."""
    norm = normalized_matrix(train)
    vectors, values = top_singular(norm, k, seed, solver)
    return SpectralFilter.build(norm, vectors, values, alpha)


@contextmanager
def filter_scorer(
    filt: SpectralFilter, threads: int
) -> Iterator[Callable[[sp.csr_matrix], np.ndarray]]:
    """filt.scores, with each block split over `threads` threads (scipy's sparse products
    and numpy's GEMM release the GIL, so two threads use two cores)."""
    if threads <= 1:
        yield filt.scores
        return
    with ThreadPoolExecutor(threads) as pool:

        def scores(h: sp.csr_matrix) -> np.ndarray:
            cuts = np.linspace(0, h.shape[0], threads + 1).astype(int)
            blocks = [h[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            return np.concatenate(list(pool.map(filt.scores, blocks)))

        yield scores


def stable_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of `scores` (B, n) ordered by (score desc, column asc) — the
    service's order (ties at the cut go to the lower column): columns (B, k) int64 and their
    scores (B, k). k <= n.

    torch.topk (threaded) takes k + 1 per row; a row whose k-th and (k+1)-th scores tie is
    redone exactly, since topk may have kept any of the tied columns."""
    b, n = scores.shape
    if k >= n:
        idx = np.broadcast_to(np.arange(n), (b, n)).copy()
    else:
        vals_t, idx_t = torch.topk(torch.from_numpy(scores), k + 1, dim=1)
        vals, idx = vals_t.numpy(), idx_t.numpy()
        tied = np.flatnonzero(vals[:, k - 1] == vals[:, k])
        idx = idx[:, :k].copy()
        for i in tied:  # the columns above the k-th score, then the lowest tied ones
            kth = vals[i, k - 1]
            top = np.flatnonzero(scores[i] > kth)
            idx[i, : len(top)] = top
            idx[i, len(top) :] = np.flatnonzero(scores[i] == kth)[: k - len(top)]
    top_vals = np.take_along_axis(scores, idx, axis=1)
    order = np.lexsort((idx, -top_vals), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top_vals, order, axis=1)


ScoreRows = Callable[[np.ndarray], np.ndarray]
"""user rows (B,) -> their scores over every item (B, n) float32."""


def evaluate_scores(
    score_rows: ScoreRows,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10, 20),
    recall_convention: Any = "lightgcn",
    batch_users: int = 1024,
) -> dict[str, float]:
    """Full-ranking Recall@K / NDCG@K of any scorer: each test user's `train` row (m, n) is
    masked (never a hit), ties go to the lower item row (the service's order)."""
    ks_list = _check_args(ks, recall_convention, batch_users, train.shape, train, test)
    train, test = _binary_csr(train), _binary_csr(test)
    cpu = torch.device("cpu")

    def rank_batch(batch: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = score_rows(batch)  # (B, n)
        rows, cols = train[batch].nonzero()
        scores[rows, cols] = -np.inf
        top_items, top_scores = stable_topk(scores, k)
        return torch.from_numpy(top_items), torch.from_numpy(top_scores > -np.inf)

    return _ranking_metrics(rank_batch, test, ks_list, recall_convention, batch_users, cpu)


def evaluate_filter(
    filt: SpectralFilter,
    histories: sp.csr_matrix,
    test: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10, 20),
    recall_convention: Any = "lightgcn",
    batch_users: int = 1024,
    threads: int = 1,
) -> dict[str, float]:
    """Full-ranking Recall@K / NDCG@K of the filter's scores for users whose history is
    their row of `histories` (m, n) (masked, never hits), against `test` (m, n)."""
    histories = _binary_csr(histories)
    with filter_scorer(filt, threads) as score:
        return evaluate_scores(
            lambda rows: score(histories[rows]),
            histories,
            test,
            ks=ks,
            recall_convention=recall_convention,
            batch_users=batch_users,
        )


def fit_spectral(
    ds: Dataset,
    cfg: TrainConfig,
    *,
    evaluate_on: sp.csr_matrix | None = None,
) -> tuple[SpectralFilter, dict[str, Any]]:
    """Fit on ds's training pairs and score ds's test split (or `evaluate_on`, e.g. nothing
    for a refit on every pair: an empty test split gives no metrics). Returns the filter and
    a summary {"metrics", "seconds_fit", "seconds_eval"}."""
    threads = cfg.num_threads or 2
    t0 = time.perf_counter()
    train = ds.train_matrix()
    filt = fit_filter(train, cfg.spectral_k, cfg.spectral_alpha, cfg.seed, cfg.spectral_solver)
    t1 = time.perf_counter()
    test = ds.test_matrix() if evaluate_on is None else evaluate_on
    metrics: dict[str, float] = {}
    if test.nnz:
        metrics = evaluate_filter(
            filt,
            train,
            test,
            ks=cfg.ks,
            recall_convention=cfg.recall_convention,
            threads=threads,
        )
    t2 = time.perf_counter()
    return filt, {"metrics": metrics, "seconds_fit": t1 - t0, "seconds_eval": t2 - t1}


def spectral_embeddings(filt: SpectralFilter, train: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """The low-pass part as embeddings: users (m, K) = α r D_I^-1/2 V̄, items (n, K) =
    D_I^1/2 V̄, so that users @ items.T is the ideal filter's score."""
    return filt.user_factors(_binary_csr(train)), filt.lowpass_out


def ranked_lists(
    score_rows: ScoreRows,
    banned: sp.csr_matrix,
    length: int,
    *,
    batch_users: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's top-`length` items by `score_rows` (user rows (B,) -> (B, n) scores), the
    user's `banned` row (m, n) left out: rows (m, L) int32 and scores (m, L) float32, best
    first, ties by lower row; -1 / -inf pad a user with fewer than L rankable items."""
    m, n = banned.shape
    length = min(length, n)
    banned = _binary_csr(banned)
    rows_out = np.full((m, length), -1, dtype=np.int32)
    scores_out = np.full((m, length), -np.inf, dtype=np.float32)
    for start in range(0, m, batch_users):
        stop = min(start + batch_users, m)
        scores = score_rows(np.arange(start, stop))  # (B, n)
        r, c = banned[start:stop].nonzero()
        scores[r, c] = -np.inf
        top, top_scores = stable_topk(scores, length)
        valid = np.isfinite(top_scores)
        rows_out[start:stop] = np.where(valid, top, -1)
        scores_out[start:stop] = np.where(valid, top_scores, -np.inf)
    return rows_out, scores_out


def top_lists(
    filt: SpectralFilter,
    histories: sp.csr_matrix,
    banned: sp.csr_matrix,
    length: int,
    *,
    batch_users: int = 1024,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``ranked_lists`` of the filter's scores of each user's `histories` row (m, n)."""
    histories = _binary_csr(histories)
    with filter_scorer(filt, threads) as score:
        return ranked_lists(
            lambda rows: score(histories[rows]), banned, length, batch_users=batch_users
        )


TOP_LIST_LENGTH = 100
"""Items per user in a published filter model's precomputed lists (the service's default
precompute_k): answers to depth 100 for known users are lookups."""


def histories_of(filt: SpectralFilter) -> sp.csr_matrix:
    """The binary (m, n) training rows the filter was fitted on: R̃'s pattern with ones (R̃
    itself holds the normalised values, which are not a history)."""
    norm = filt.norm
    return sp.csr_matrix(
        (np.ones(len(norm.indices), np.float32), norm.indices, norm.indptr), shape=norm.shape
    )


def seen_matrix(arrays: ModelArrays) -> sp.csr_matrix:
    """The artifact's seen items (every known interaction) as a binary (m, n) CSR."""
    return sp.csr_matrix(
        (np.ones(len(arrays.seen_indices), np.float32), arrays.seen_indices, arrays.seen_indptr),
        shape=(arrays.n_users, arrays.n_items),
    )


def with_filter(
    arrays: ModelArrays,
    filt: SpectralFilter,
    lists: tuple[np.ndarray, np.ndarray],
    *,
    lowpass_apart: bool = False,
) -> ModelArrays:
    """`arrays` with the filter and the per-user top `lists` (rows (m, L), scores (m, L))
    added; `lowpass_apart` (a blend, whose embeddings are DirectSpec+'s) adds the filter's
    low-pass factors as ``filter_lowpass``."""
    rows, scores = lists
    extra = {"filter_lowpass": filt.lowpass_out} if lowpass_apart else {}
    return arrays.with_arrays(
        filter_indptr=filt.norm.indptr.astype(np.int64),
        filter_indices=filt.norm.indices.astype(np.int32),
        filter_data=filt.norm.data.astype(np.float32),
        filter_singular_values=filt.singular_values.astype(np.float32),
        top_rows=rows,
        top_scores=scores,
        **extra,
    )


def spectral_arrays(arrays: ModelArrays, filt: SpectralFilter, cfg: TrainConfig) -> ModelArrays:
    """`arrays` (ids, seen items, the low-pass embeddings) with the filter and each user's
    top list added: their row of the matrix the filter was fitted on, scored, their seen
    items (every known interaction) left out."""
    lists = top_lists(
        filt, histories_of(filt), seen_matrix(arrays), TOP_LIST_LENGTH, threads=cfg.num_threads or 2
    )
    return with_filter(arrays, filt, lists)
