"""The blend of the spectral filter and DirectSpec+: per-user standardised scores, summed.

For a user (or any item history with its query vector), both score rows over all n items are
standardised — minus their mean over the n items, over their standard deviation (a constant
row becomes zeros) — and summed with the weight β (``blend_weight``):

    S = z(s_filter(r)) + β · z(u · Vᵀ)

z makes the two scales comparable (the filter's scores and the embedding's inner products
differ by orders of magnitude) without changing either model's own ranking. The trainer
chooses β on a validation split, evaluates and publishes with these scores; the service
answers with them (service/scoring.py). numpy only.
"""

from __future__ import annotations

import numpy as np


def zscore(scores: np.ndarray) -> np.ndarray:
    """Each row of `scores` (B, n) minus its mean, over its standard deviation (a constant
    row becomes zeros): (B, n) float32, a new array."""
    s = np.array(scores, dtype=np.float32, ndmin=2)
    s -= s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    np.divide(s, std, out=s, where=std > 0)
    s[(std == 0).ravel()] = 0.0
    return s


def blend(filter_scores: np.ndarray, embedding_scores: np.ndarray, weight: float) -> np.ndarray:
    """z(filter_scores) + weight · z(embedding_scores), both (B, n) over the same n items:
    (B, n) float32."""
    if filter_scores.shape != embedding_scores.shape:
        raise ValueError(f"score shapes differ: {filter_scores.shape} vs {embedding_scores.shape}")
    out = zscore(filter_scores)
    out += np.float32(weight) * zscore(embedding_scores)
    return out
