"""Top-K ranking metrics: pure numpy per-list functions and batched full-ranking evaluation.

Conventions (docs/method.md#evaluation):

* Full ranking over all items; each user's training items are masked (score -inf) and can
  never count as hits, even when they also appear in the user's test set.
* Recall@K: ``"lightgcn"`` divides hits@K by |T_u|, ``"reference"`` (the DirectSpec code) by
  min(K, |T_u|). NDCG@K: binary gains, discount 1 / log2(rank + 1) with rank 1-based, IDCG over
  the first min(K, |T_u|) ranks.
* Users without test items are skipped; metrics are means over the evaluated users.
* A user with fewer than K unmasked items simply gets fewer candidates; masked items that
  fill up the top-K are never hits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from contract.config import RecallConvention

# ----------------------------------------------------------------------------- per-list metrics


def _hits(ranked: np.ndarray, relevant: set[int] | np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Binary hit vector for the first k ranked items (k' = min(k, len(ranked)),) and |T|."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.asarray(ranked, dtype=np.int64).reshape(-1)[:k]
    if len(np.unique(top)) != len(top):
        raise ValueError("ranked contains duplicate items")
    rel = np.fromiter(relevant, dtype=np.int64) if isinstance(relevant, set | frozenset) else None
    rel = np.unique(np.asarray(relevant, dtype=np.int64)) if rel is None else rel
    if len(rel) == 0:
        raise ValueError("relevant is empty: the metric is undefined (skip such users)")
    return np.isin(top, rel), len(rel)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k, shape (k,) float64."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def recall_at_k(
    ranked: np.ndarray,
    relevant: set[int] | np.ndarray,
    k: int,
    convention: RecallConvention = "lightgcn",
) -> float:
    """Recall@k of one ranked list (item ids, best first) against the relevant (test) items.

    ``lightgcn``: hits / |T|; ``reference``: hits / min(k, |T|).
    """
    hits, n_rel = _hits(ranked, relevant, k)
    match convention:
        case "lightgcn":
            denom = n_rel
        case "reference":
            denom = min(k, n_rel)
        case _:
            raise ValueError(f"unknown recall convention {convention!r}")
    return float(hits.sum() / denom)


def ndcg_at_k(ranked: np.ndarray, relevant: set[int] | np.ndarray, k: int) -> float:
    """NDCG@k with binary gains; IDCG over the first min(k, |T|) ranks."""
    hits, n_rel = _hits(ranked, relevant, k)
    disc = _discounts(k)
    return float((hits * disc[: len(hits)]).sum() / disc[: min(k, n_rel)].sum())


# ----------------------------------------------------------------------------- batched ranking


def _binary_csr(mat: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR with sorted, unique column indices and no explicit zeros (the input is not modified)."""
    csr = sp.csr_matrix(mat)
    if not csr.has_canonical_format or (csr.data == 0).any():
        csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def _csr_to_torch(mat: sp.csr_matrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) int64 index tensors of the nonzeros of a CSR matrix, on ``device``."""
    rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr))
    return (
        torch.from_numpy(rows).to(device),
        torch.from_numpy(mat.indices.astype(np.int64)).to(device),
    )


def _check_args(
    ks: Sequence[int], convention: str, batch_users: int, shape: tuple[int, int], *mats: sp.spmatrix
) -> list[int]:
    """Validated, sorted, distinct ks; raises ValueError on bad arguments or shapes."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if convention not in ("lightgcn", "reference"):
        raise ValueError(f"unknown recall convention {convention!r}")
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    for name, mat in zip(("train", "test"), mats, strict=True):
        if mat.shape != shape:
            raise ValueError(f"{name} has shape {mat.shape}, expected {shape}")
    return ks


# rank_batch(user rows (B,), k) -> (top items (B, k) int64, valid (B, k) bool): best first;
# invalid slots (masked items that fill up a short candidate list) are never hits.
RankFn = Callable[[np.ndarray, int], tuple[torch.Tensor, torch.Tensor]]


def _ranking_metrics(
    rank_batch: RankFn,
    test: sp.csr_matrix,
    ks: list[int],
    convention: RecallConvention,
    batch_users: int,
    device: torch.device,
) -> dict[str, float]:
    """Mean Recall@K / NDCG@K over users with test items, ranking them batch by batch."""
    n = test.shape[1]
    n_test = np.diff(test.indptr)
    eval_users = np.flatnonzero(n_test > 0)
    k_max = min(ks[-1], n)
    disc = torch.as_tensor(_discounts(ks[-1]), dtype=torch.float64, device=device)  # (K,)
    cum_disc = torch.cumsum(disc, 0)  # IDCG for |T| relevant items = cum_disc[min(K,|T|) - 1]
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg")}

    for start in range(0, len(eval_users), batch_users):
        batch = eval_users[start : start + batch_users]
        top_items, valid = rank_batch(batch, k_max)  # (B, K')

        # hit = (row, item) is a test pair: test keys row * n + item are sorted (canonical CSR)
        te_rows, te_cols = _csr_to_torch(test[batch], device)
        test_keys = te_rows * n + te_cols  # (nnz_B,)
        query = torch.arange(len(batch), device=device).unsqueeze(1) * n + top_items  # (B, K')
        pos = torch.searchsorted(test_keys, query).clamp_(max=len(test_keys) - 1)
        hits = ((test_keys[pos] == query) & valid).to(torch.float64)  # (B, K')

        n_rel = torch.from_numpy(n_test[batch]).to(device=device, dtype=torch.float64)  # (B,)
        for k in ks:
            hits_k = hits[:, : min(k, k_max)]
            capped = torch.clamp(n_rel, max=k)  # min(K, |T|)
            denom = n_rel if convention == "lightgcn" else capped
            dcg = (hits_k * disc[: hits_k.shape[1]]).sum(1)
            idcg = cum_disc[capped.long() - 1]
            sums[f"recall@{k}"] += float((hits_k.sum(1) / denom).sum())
            sums[f"ndcg@{k}"] += float((dcg / idcg).sum())

    n_eval = len(eval_users)
    out: dict[str, float] = {key: (val / n_eval if n_eval else 0.0) for key, val in sums.items()}
    out["n_users"] = n_eval
    return out


@torch.no_grad()
def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10, 20),
    recall_convention: RecallConvention = "lightgcn",
    batch_users: int = 1024,
) -> dict[str, float]:
    """Full-ranking Recall@K and NDCG@K of the scores ``user_emb @ item_emb.T``.

    user_emb: (m, d), item_emb: (n, d), on any device (the work runs on ``user_emb``'s);
    train, test: (m, n) sparse, nonzeros = interactions. Returns ``{"recall@K", "ndcg@K"
    for K in ks, "n_users": number of users evaluated}``. Memory: one (batch_users, n) float
    score block (Gowalla, 1024 users: 168 MB).
    """
    if user_emb.ndim != 2 or item_emb.ndim != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"embedding shapes {tuple(user_emb.shape)}, {tuple(item_emb.shape)}")
    shape = (user_emb.shape[0], item_emb.shape[0])
    ks = _check_args(ks, recall_convention, batch_users, shape, train, test)
    train, test = _binary_csr(train), _binary_csr(test)

    device = user_emb.device
    dtype = user_emb.dtype if user_emb.dtype in (torch.float32, torch.float64) else torch.float32
    users_t = user_emb.detach().to(dtype)
    items_t = item_emb.detach().to(device=device, dtype=dtype)

    def rank_batch(batch: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = users_t[torch.from_numpy(batch).to(device)] @ items_t.T  # (B, n)
        tr_rows, tr_cols = _csr_to_torch(train[batch], device)
        scores[tr_rows, tr_cols] = -torch.inf  # seen items can never be recommended
        top_scores, top_items = torch.topk(scores, k, dim=1)  # (B, k)
        return top_items, top_scores > -torch.inf

    return _ranking_metrics(rank_batch, test, ks, recall_convention, batch_users, device)


def popularity_ranking(train: sp.csr_matrix) -> np.ndarray:
    """Item rows ordered by training popularity, most popular first; ties by lower row first."""
    train = _binary_csr(train)
    counts = np.bincount(train.indices, minlength=train.shape[1])
    return np.lexsort((np.arange(len(counts)), -counts))


@torch.no_grad()
def evaluate_popularity(
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    *,
    ks: Sequence[int] = (10, 20),
    recall_convention: RecallConvention = "lightgcn",
    batch_users: int = 1024,
) -> dict[str, float]:
    """Same metrics as :func:`evaluate` when every user gets the items ranked by training
    popularity (:func:`popularity_ranking`), their own training items removed.

    Runs on the CPU without scoring every item: a user's top K lies within the first
    K + (its number of training items) items of the global ranking.
    """
    ks = _check_args(ks, recall_convention, batch_users, train.shape, train, test)
    train, test = _binary_csr(train), _binary_csr(test)
    n = train.shape[1]
    order = torch.from_numpy(popularity_ranking(train))  # (n,) items, best first
    position = torch.empty(n, dtype=torch.int64)
    position[order] = torch.arange(n)  # item -> its place in the global ranking
    n_seen = np.diff(train.indptr)
    cpu = torch.device("cpu")

    def rank_batch(batch: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, width = len(batch), min(n, k + int(n_seen[batch].max()))
        tr_rows, tr_cols = _csr_to_torch(train[batch], cpu)
        place = position[tr_cols]
        inside = place < width
        seen = torch.zeros((b, width), dtype=torch.bool)  # (B, W): ranking slot is seen
        seen[tr_rows[inside], place[inside]] = True
        unseen_upto = torch.cumsum(~seen, dim=1)  # (B, W) unseen slots in [0, col]
        want = torch.arange(1, k + 1).expand(b, k).contiguous()  # (B, k)
        cols = torch.searchsorted(unseen_upto, want)  # (B, k) slot of the j-th unseen item
        valid = cols < width  # fewer than k unseen items in the whole catalogue
        return order[cols.clamp_(max=width - 1)], valid

    return _ranking_metrics(rank_batch, test, ks, recall_convention, batch_users, cpu)
