"""Spectrum statistics on matrices whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from contract.spectrum import (
    condition_number,
    effective_rank,
    embedding_spectrum,
    energy_share,
    singular_values,
    spectrum_stats,
    stable_rank,
)


def test_orthogonal_matrix_has_full_effective_rank() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(200, 16)))
    sv = singular_values(q)
    np.testing.assert_allclose(sv, np.ones(16), atol=1e-9)
    assert effective_rank(sv) == pytest.approx(16.0)
    assert stable_rank(sv) == pytest.approx(16.0)
    assert condition_number(sv) == pytest.approx(1.0)
    assert energy_share(sv, 1) == pytest.approx(1 / 16)


def test_rank_one_matrix_collapses_to_one() -> None:
    x = np.outer(np.arange(1, 51), np.random.default_rng(1).normal(size=8))
    sv = singular_values(x)
    assert effective_rank(sv) == pytest.approx(1.0, abs=1e-6)
    assert stable_rank(sv) == pytest.approx(1.0)
    assert condition_number(sv) == float("inf")
    assert energy_share(sv, 1) == pytest.approx(1.0)
    # row-normalising a rank-one matrix keeps it rank one
    assert effective_rank(singular_values(x, normalize_rows=True)) == pytest.approx(1.0, abs=1e-6)


def test_hand_worked_values() -> None:
    sv = np.array([1.0, 3.0])  # unsorted on purpose
    p = np.array([0.75, 0.25])
    assert effective_rank(sv) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert stable_rank(sv) == pytest.approx((9 + 1) / 9)
    assert condition_number(sv) == pytest.approx(3.0)
    assert energy_share(sv, 1) == pytest.approx(0.9)
    stats = spectrum_stats(sv)
    assert stats["singular_values"] == [3.0, 1.0]
    assert stats["singular_values_normalized"] == pytest.approx([1.0, 1 / 3])
    assert stats["effective_rank_ratio"] == pytest.approx(stats["effective_rank"] / 2)


def test_singular_values_match_numpy_svd_both_orientations() -> None:
    rng = np.random.default_rng(2)
    for shape in [(300, 12), (5, 12)]:
        x = rng.normal(size=shape)
        np.testing.assert_allclose(
            singular_values(x), np.linalg.svd(x, compute_uv=False), rtol=1e-8, atol=1e-10
        )


def test_embedding_spectrum_layout_and_normalisation() -> None:
    rng = np.random.default_rng(3)
    users = rng.normal(size=(40, 6)) * np.array([100, 1, 1, 1, 1, 1])  # one dominant direction
    items = rng.normal(size=(30, 6))
    spec = embedding_spectrum(users, items)
    assert set(spec) == {"users", "items", "all"}
    raw_u = spec["users"]["raw"]["singular_values"]
    np.testing.assert_allclose(raw_u, np.linalg.svd(users, compute_uv=False))
    unit = users / np.linalg.norm(users, axis=1, keepdims=True)
    np.testing.assert_allclose(
        spec["users"]["normalized"]["singular_values"], np.linalg.svd(unit, compute_uv=False)
    )
    assert spec["users"]["raw"]["top1_energy"] > 0.9
    assert spec["items"]["normalized"]["effective_rank"] > 5.0


def test_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="non-empty 2-D"):
        singular_values(np.zeros((0, 4)))
