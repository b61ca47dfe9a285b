"""The blend's score: per-row standardisation, summed with a weight (contract/blend.py)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.blend import blend, zscore


def test_zscore_by_hand() -> None:
    got = zscore(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    s = np.sqrt(2.0 / 3.0)  # population std of 1, 2, 3
    np.testing.assert_allclose(got[0], [-1 / s, 0.0, 1 / s], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [0.0, 0.0, 0.0])  # a constant row becomes zeros
    assert got.dtype == np.float32


def test_blend_by_hand_and_its_scale_invariance() -> None:
    f = np.array([[0.0, 10.0, 20.0]])  # z = [-a, 0, a], a = 1.2247
    e = np.array([[3.0, 1.0, 2.0]])  # z = [a, -a, 0]
    a = 1.0 / np.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(blend(f, e, 2.0), [[-a + 2 * a, -2 * a, a]], rtol=1e-6)
    # each part's scale and offset do not matter
    np.testing.assert_allclose(
        blend(100 * f + 7, 0.01 * e - 3, 2.0), blend(f, e, 2.0), atol=2e-4
    )  # float32
    with pytest.raises(ValueError, match="shapes differ"):
        blend(f, e[:, :2], 1.0)
