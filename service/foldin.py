"""Fold-in: a user vector from an item history, for users the model was not trained on.

Pure numpy/scipy, no I/O. Two steps (docs/method.md, "Fold-in"):

1. A weighted sum of the history's item vectors, ``s(H) = sum_{i in H} w_i v_i``, with the
   encoder's weights: ``cosine`` (``w_i = 1 / |v_i|``: with the items fixed, the sum of unit
   item vectors maximises the alignment term of the DirectSpec family and DirectAU over a
   user's direction) or ``propagation`` (``w_i = 1 / sqrt(deg_i + 1)``: LightGCN's first
   propagation step from the history, up to the 1 / sqrt(|H|) scale).
2. A linear map ``M`` (d, d) from such sums to the trained user vectors, fitted by ridge
   regression on the model's own training users (``fit_map``; at most ``MAP_FIT_USERS`` of
   them, evenly spaced): ``u = s(H) @ M``. The sum alone
   leans towards directions every item shares (popular items); the map learns from the
   trained users how their histories become vectors, whatever the objective did.
   Measured (bench/foldin.py, docs/benchmarks.md#fold-in): users held out of CiteULike's
   MF-DirectSpec+ (300 epochs) reach 0.91 of their trained Recall@20 with the map, 0.87
   with the sum alone; Gowalla's (50 epochs) 0.98; CiteULike's LightGCN-DirectSpec+ (100
   epochs, propagation weights) 0.91.

A known user's new items ``N`` move the trained vector by what the map says they add:
``u = u0 + s(N) @ M``, which for ``u0 = s(H0) @ M`` exactly is the fold-in of H0 + N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

FoldInRule = Literal["cosine", "propagation"]

RIDGE = 1e-3
"""The map's ridge, relative to the mean diagonal of ``S^T S``: small, only to keep the solve
well posed when the users do not span every direction."""

MAP_FIT_USERS = 131_072
"""Most training users the map is fitted on. A (d, d) ridge fit has settled long before (d² =
4,096 numbers), and the fit runs at every load: at 10⁶ users x 3.8·10⁷ pairs fitting on all
users took 9.8 s and ~1.5 GB of temporaries (float64 copies of the catalogue and the sums)."""

_EPS = 1e-12


def rule_for(encoder: object) -> FoldInRule:
    """The fold-in weights of an artifact's encoder ("lightgcn" -> propagation, else cosine)."""
    return "propagation" if encoder == "lightgcn" else "cosine"


def item_weights(item_emb: np.ndarray, degrees: np.ndarray, rule: FoldInRule) -> np.ndarray:
    """Per-item weights ``w`` (n,) float32 of `rule`, from item vectors (n, d) and training
    degrees (n,)."""
    if rule == "cosine":
        w = 1.0 / np.maximum(np.linalg.norm(item_emb, axis=1), _EPS)
    elif rule == "propagation":
        w = 1.0 / np.sqrt(np.asarray(degrees, dtype=np.float64) + 1.0)
    else:
        raise ValueError(f"unknown fold-in rule {rule!r}")
    return w.astype(np.float32)


def history_sum(item_emb: np.ndarray, weights: np.ndarray, history: np.ndarray) -> np.ndarray:
    """s(H) (d,) float64 for `history` (h,) item rows; repeats count once; zero when empty."""
    rows = np.unique(np.asarray(history, dtype=np.int64))
    return weights[rows].astype(np.float64) @ item_emb[rows].astype(np.float64)


def history_sums(
    item_emb: np.ndarray,
    weights: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    chunk: int = 4096,
) -> np.ndarray:
    """s(H) for q histories given as CSR rows (indptr (q + 1,), unique indices per row):
    (q, d) float64, one sparse-dense product per `chunk` histories over only the items they
    name (so no float64 copy of the whole catalogue is made)."""
    q, d = len(indptr) - 1, item_emb.shape[1]
    out = np.zeros((q, d))
    for start in range(0, q, chunk):
        stop = min(q, start + chunk)
        lo, hi = int(indptr[start]), int(indptr[stop])
        if lo == hi:
            continue
        named = np.asarray(indices[lo:hi])
        cols, local = np.unique(named, return_inverse=True)
        mat = sp.csr_matrix(
            (weights[named].astype(np.float64), local, np.asarray(indptr[start : stop + 1]) - lo),
            shape=(stop - start, len(cols)),
        )
        out[start:stop] = mat @ np.asarray(item_emb[cols], dtype=np.float64)
    return out


def map_fit_rows(n_users: int, limit: int = MAP_FIT_USERS) -> np.ndarray:
    """The user rows the map is fitted on: all of them up to `limit`, else `limit` rows evenly
    spaced over 0 .. n_users - 1 (deterministic, so every replica fits the same map)."""
    if n_users <= limit:
        return np.arange(n_users, dtype=np.int64)
    return np.unique(np.linspace(0, n_users - 1, limit).round().astype(np.int64))


def csr_rows(
    indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The CSR (indptr (r + 1,), indices) of `rows` (r,) of the CSR (indptr, indices)."""
    starts = np.asarray(indptr[rows], dtype=np.int64)
    lengths = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    out_ptr = np.concatenate([[0], np.cumsum(lengths)])
    positions = np.repeat(starts - out_ptr[:-1], lengths) + np.arange(out_ptr[-1])
    return out_ptr, np.asarray(indices)[positions]


def fit_map(sums: np.ndarray, user_emb: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """M (d, d) minimising ``|S M - U|^2 + lam |M|^2`` over the training users (rows of
    `sums` (m, d) and `user_emb` (m, d)), ``lam = ridge * trace(S^T S) / d``. Identity when no
    user has a history."""
    s = np.asarray(sums, dtype=np.float64)
    d = s.shape[1]
    gram = s.T @ s
    scale = np.trace(gram) / d
    if not np.isfinite(scale) or scale <= _EPS:
        return np.eye(d)
    return np.linalg.solve(gram + ridge * scale * np.eye(d), s.T @ user_emb.astype(np.float64))


@dataclass(frozen=True, eq=False)
class FoldIn:
    """A model's fold-in: its item vectors (n, d), weights (n,) and map (d, d)."""

    rule: FoldInRule
    item_emb: np.ndarray
    weights: np.ndarray
    map: np.ndarray

    @classmethod
    def fit(
        cls,
        item_emb: np.ndarray,
        user_emb: np.ndarray,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        rule: FoldInRule,
        fit_users: int = MAP_FIT_USERS,
    ) -> FoldIn:
        """Fit the map on the training users (user_emb (m, d); their items as CSR rows), or on
        ``MAP_FIT_USERS`` of them evenly spaced when there are more (`fit_users`)."""
        degrees = np.bincount(seen_indices, minlength=item_emb.shape[0])
        weights = item_weights(item_emb, degrees, rule)
        rows = map_fit_rows(len(seen_indptr) - 1, fit_users)
        indptr, indices = csr_rows(seen_indptr, seen_indices, rows)
        sums = history_sums(item_emb, weights, indptr, indices)
        return cls(rule, item_emb, weights, fit_map(sums, np.asarray(user_emb[rows])))

    def vector(self, history: np.ndarray) -> np.ndarray:
        """The fold-in (d,) float32 of one history (item rows)."""
        return (history_sum(self.item_emb, self.weights, history) @ self.map).astype(np.float32)

    def vectors(self, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Fold-ins (q, d) float32 of q histories as CSR rows (unique indices per row)."""
        sums = history_sums(self.item_emb, self.weights, indptr, indices)
        return (sums @ self.map).astype(np.float32)

    def update(self, user_vec: np.ndarray, new_items: np.ndarray) -> np.ndarray:
        """A known user's vector (d,) moved by items they had not seen: ``u0 + s(N) @ M``."""
        delta = history_sum(self.item_emb, self.weights, new_items) @ self.map
        return (user_vec.astype(np.float64) + delta).astype(np.float32)
