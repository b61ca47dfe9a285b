"""Embedding-spectrum statistics (pure numpy; imported by the service, so never torch).

All functions take singular values ``sv`` as a 1-D array (any order) or an embedding matrix
``x`` of shape (rows, d). "Normalised" means each row is L2-normalised before the SVD, which
shows collapse more honestly than the raw tables (docs/method.md#spectrum-and-effective-rank).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-12


def row_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero. x: (rows, d) -> (rows, d)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def singular_values(x: np.ndarray, normalize_rows: bool = False) -> np.ndarray:
    """Singular values of x (rows, d), sorted descending, shape (min(rows, d),), float64.

    Computed from the d×d Gram matrix (cheap for tall matrices: rows can be millions).
    """
    x = row_normalize(x) if normalize_rows else np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {x.shape}")
    if x.shape[0] >= x.shape[1]:
        eig = np.linalg.eigvalsh(x.T @ x)
        sv = np.sqrt(np.clip(eig, 0.0, None))
    else:
        sv = np.linalg.svd(x, compute_uv=False)
    return np.sort(sv)[::-1]


def effective_rank(sv: np.ndarray) -> float:
    """exp(entropy of p = sv / sum(sv)); in [1, len(sv)] (Roy & Vetterli 2007)."""
    sv = np.asarray(sv, dtype=np.float64)
    total = sv.sum()
    if total <= _EPS:
        return 0.0
    p = sv[sv > _EPS] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def stable_rank(sv: np.ndarray) -> float:
    """sum(sv²) / max(sv)²; in [1, len(sv)]."""
    sv = np.asarray(sv, dtype=np.float64)
    top = sv.max(initial=0.0)
    return float((sv**2).sum() / top**2) if top > _EPS else 0.0


def condition_number(sv: np.ndarray) -> float:
    """max(sv) / min(sv); inf when the smallest singular value is (numerically) zero."""
    sv = np.asarray(sv, dtype=np.float64)
    low = sv.min()
    return float(sv.max() / low) if low > _EPS * max(sv.max(), 1.0) else float("inf")


def energy_share(sv: np.ndarray, top: int) -> float:
    """Share of sum(sv²) carried by the `top` largest singular values, in [0, 1]."""
    sq = np.sort(np.asarray(sv, dtype=np.float64))[::-1] ** 2
    total = sq.sum()
    return float(sq[:top].sum() / total) if total > _EPS else 0.0


def spectrum_stats(sv: np.ndarray) -> dict[str, Any]:
    """JSON-ready summary of one spectrum. Keys are part of the artifact/HTTP contract."""
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    d = len(sv)
    erank = effective_rank(sv)
    return {
        "dim": d,
        "singular_values": [float(v) for v in sv],
        "singular_values_normalized": [float(v) for v in sv / max(sv[0], _EPS)],
        "effective_rank": erank,
        "effective_rank_ratio": erank / d if d else 0.0,
        "stable_rank": stable_rank(sv),
        "condition_number": condition_number(sv),
        "top1_energy": energy_share(sv, 1),
        "top10_energy": energy_share(sv, 10),
    }


def embedding_spectrum(user_emb: np.ndarray, item_emb: np.ndarray) -> dict[str, Any]:
    """Spectrum of users, items and both stacked, raw and row-normalised.

    Returns {"users": {"raw": stats, "normalized": stats}, "items": {...}, "all": {...}}.
    The reference code's erank is on the stacked [U; I] matrix ("all").
    """
    out: dict[str, Any] = {}
    both = np.vstack([row_normalize(user_emb), row_normalize(item_emb)])
    for name, mat in (("users", user_emb), ("items", item_emb)):
        out[name] = {
            "raw": spectrum_stats(singular_values(mat)),
            "normalized": spectrum_stats(singular_values(mat, normalize_rows=True)),
        }
    out["all"] = {
        "raw": spectrum_stats(singular_values(np.vstack([user_emb, item_emb]))),
        "normalized": spectrum_stats(singular_values(both)),
    }
    return out
