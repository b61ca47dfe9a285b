"""The spectral filter's scores (contract/spectral.py) against hand-worked and dense numpy
computations, and the exactness of scoring a history (what fold-in relies on)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from contract.spectral import (
    DENSE_FROM_ROWS,
    SpectralFilter,
    histories_matrix,
    inverse_sqrt,
    normalized_matrix,
)

# 2 users x 3 items: user 0 has items 0, 1; user 1 has items 1, 2
R_SMALL = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))


def _dense_filter(r: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """GF-CF by dense numpy: (R̃, score matrix for every row of r)."""
    du, di = r.sum(1), r.sum(0)
    with np.errstate(divide="ignore"):
        su = np.where(du > 0, du**-0.5, 0.0)
        si = np.where(di > 0, di**-0.5, 0.0)
    rn = su[:, None] * r * si[None, :]
    _, _, vt = np.linalg.svd(rn)
    v = vt[:k].T
    ideal = (r * si[None, :]) @ v @ v.T @ np.diag(np.sqrt(di))
    return rn, r @ rn.T @ rn + alpha * ideal


def _fit(r: sp.csr_matrix, k: int, alpha: float) -> SpectralFilter:
    norm = normalized_matrix(r)
    _, s, vt = np.linalg.svd(norm.toarray().astype(np.float64))
    return SpectralFilter.build(norm, vt[:k].T, s[:k], alpha)


def test_normalized_matrix_by_hand() -> None:
    # d_u = (2, 2), d_i = (1, 2, 1): entries 1 / sqrt(d_u d_i)
    h = 1 / np.sqrt(2)
    want = np.array([[h, 0.5, 0.0], [0.0, 0.5, h]])
    np.testing.assert_allclose(normalized_matrix(R_SMALL).toarray(), want, rtol=1e-6)


def test_linear_part_by_hand() -> None:
    # R̃ᵀR̃ = [[.5, h/2... ]]: with alpha 0 only the linear part scores
    filt = _fit(R_SMALL, k=1, alpha=0.0)
    q = 0.5 / np.sqrt(2)  # 0.35355: items 0 and 1 share user 0
    gram = np.array([[0.5, q, 0.0], [q, 0.5, q], [0.0, q, 0.5]])
    np.testing.assert_allclose(filt.scores(R_SMALL), R_SMALL.toarray() @ gram, rtol=1e-5)
    np.testing.assert_allclose(filt.item_scores(np.array([0])), gram[:1], rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_scores_match_dense_gfcf(k: int) -> None:
    r = R_SMALL.toarray().astype(np.float64)
    _, want = _dense_filter(r, k, alpha=0.3)
    np.testing.assert_allclose(_fit(R_SMALL, k, 0.3).scores(R_SMALL), want, rtol=1e-5, atol=1e-6)


def test_scores_on_a_random_matrix_both_paths() -> None:
    """Sparse (few rows) and dense (many rows) paths give the dense numpy scores; an
    empty item column and an empty user row are handled (zero scale, no inf)."""
    rng = np.random.default_rng(3)
    r = (rng.random((30, 20)) < 0.2).astype(np.float64)
    r[:, 7] = 0  # an item nobody has
    r[4] = 0  # a user with nothing
    _, want = _dense_filter(r, k=5, alpha=0.7)
    filt = _fit(sp.csr_matrix(r), 5, 0.7)
    many = filt.scores(sp.csr_matrix(r))  # 30 rows: dense path
    assert r.shape[0] >= DENSE_FROM_ROWS
    np.testing.assert_allclose(many, want, rtol=1e-4, atol=1e-5)
    few = np.vstack([filt.scores(sp.csr_matrix(r[i : i + 1])) for i in range(len(r))])
    np.testing.assert_allclose(few, want, rtol=1e-4, atol=1e-5)
    assert np.isfinite(many).all()


def test_from_factors_rebuilds_the_same_filter() -> None:
    """What the service rebuilds from the artifact (R̃, D^1/2 V̄, σ) scores like the fit."""
    rng = np.random.default_rng(0)
    r = sp.csr_matrix((rng.random((25, 15)) < 0.3).astype(np.float32))
    fit = _fit(r, 4, 0.3)
    again = SpectralFilter.from_factors(fit.norm, fit.lowpass_out, fit.singular_values, 0.3)
    np.testing.assert_allclose(again.scores(r), fit.scores(r), rtol=1e-5, atol=1e-6)


def test_a_history_scores_like_the_same_row() -> None:
    rng = np.random.default_rng(1)
    r = sp.csr_matrix((rng.random((25, 15)) < 0.3).astype(np.float32))
    filt = _fit(r, 4, 0.3)
    user = 3
    history = r[user].indices
    got = filt.scores(histories_matrix([history[::-1], history], r.shape[1]))
    np.testing.assert_allclose(got[0], filt.scores(r[user])[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], got[0], rtol=1e-6)


def test_inverse_sqrt_zero_degree() -> None:
    np.testing.assert_allclose(inverse_sqrt(np.array([0, 1, 4])), [0.0, 1.0, 0.5])


def test_response_is_linear_squared_plus_alpha() -> None:
    filt = _fit(R_SMALL, k=2, alpha=0.3)
    resp = filt.response()
    s = np.asarray(resp["singular_values"])
    np.testing.assert_allclose(resp["linear"], (s / s[0]) ** 2, rtol=1e-6)
    np.testing.assert_allclose(resp["total"], (s / s[0]) ** 2 + 0.3, rtol=1e-6)
