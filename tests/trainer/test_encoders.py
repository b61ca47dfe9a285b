"""Encoders: LightGCN propagation against a dense numpy computation; MF lookups; init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from trainer.encoders import MF, LightGCN, init_table, normalized_adjacency, propagate


def tiny_graph() -> sp.csr_matrix:
    # 3 users x 4 items; item 3 has no interactions (degree 0), user 2 has one
    r = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32)
    return sp.csr_matrix(r)


def dense_normalized_adjacency(r: np.ndarray) -> np.ndarray:
    m, n = r.shape
    a = np.zeros((m + n, m + n))
    a[:m, m:] = r
    a[m:, :m] = r.T
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_dense_formula():
    r = tiny_graph()
    got = normalized_adjacency(r).to_dense().numpy()
    want = dense_normalized_adjacency(r.toarray())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # hand check one entry: user 0 (degree 2) - item 1 (degree 2): 1 / sqrt(2 * 2)
    assert got[0, 3 + 1] == pytest.approx(0.5)
    assert (got[3 + 3] == 0).all()  # the isolated item stays zero


def test_normalized_adjacency_ignores_duplicate_interactions():
    r = sp.coo_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2)).tocsr()
    got = normalized_adjacency(r).to_dense().numpy()
    np.testing.assert_allclose(got, dense_normalized_adjacency(np.array([[0, 1], [1, 0]])))


@pytest.mark.parametrize("layers", [1, 3])
def test_propagation_and_gradient_match_dense_numpy(layers):
    r = tiny_graph()
    a = dense_normalized_adjacency(r.toarray())
    rng = np.random.default_rng(0)
    e0 = rng.normal(size=(7, 2))
    want = sum(np.linalg.matrix_power(a, k) @ e0 for k in range(layers + 1)) / (layers + 1)
    weights = rng.normal(size=(7, 2))
    # d/de0 sum(weights * P e0) = P^T weights, P = mean of A^k
    p = sum(np.linalg.matrix_power(a, k) for k in range(layers + 1)) / (layers + 1)

    e = torch.tensor(e0, dtype=torch.float32, requires_grad=True)
    out = propagate(normalized_adjacency(r), e, layers)
    (out * torch.tensor(weights, dtype=torch.float32)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.grad.numpy(), p.T @ weights, rtol=1e-5, atol=1e-6)


def test_lightgcn_rows_are_rows_of_the_propagated_tables():
    r = tiny_graph()
    enc = LightGCN(r, 2, n_layers=2, generator=torch.Generator().manual_seed(0))
    e0 = enc.embedding.detach().numpy().astype(np.float64)
    a = dense_normalized_adjacency(r.toarray())
    full = (e0 + a @ e0 + a @ a @ e0) / 3
    users, items = torch.tensor([2, 0]), torch.tensor([3, 1])
    u, i = enc.rows(users, items)
    np.testing.assert_allclose(u.detach().numpy(), full[[2, 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i.detach().numpy(), full[[3 + 3, 3 + 1]], rtol=1e-5, atol=1e-6)
    eu, ei = enc.ego_rows(users, items)
    np.testing.assert_array_equal(eu.detach().numpy(), e0[[2, 0]].astype(np.float32))
    np.testing.assert_array_equal(ei.detach().numpy(), e0[[6, 4]].astype(np.float32))
    fu, fi = enc.final()
    assert fu.shape == (3, 2) and fi.shape == (4, 2)


def test_mf_rows_index_the_tables():
    enc = MF(5, 4, 3, generator=torch.Generator().manual_seed(1))
    u, i, j = enc.rows(torch.tensor([4, 4]), torch.tensor([0]), torch.tensor([3]))
    np.testing.assert_array_equal(u.detach().numpy(), enc.user.weight.detach().numpy()[[4, 4]])
    np.testing.assert_array_equal(i.detach().numpy(), enc.item.weight.detach().numpy()[[0]])
    np.testing.assert_array_equal(j.detach().numpy(), enc.item.weight.detach().numpy()[[3]])


def test_xavier_init_bound_and_spread():
    t = init_table(5000, 64, init="xavier", std=0.0, generator=torch.Generator().manual_seed(0))
    bound = math.sqrt(6 / (5000 + 64))
    assert t.abs().max().item() <= bound
    # uniform on [-b, b] has std b / sqrt(3)
    assert t.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    t = init_table(5000, 64, init="normal", std=0.1, generator=torch.Generator().manual_seed(0))
    assert t.std().item() == pytest.approx(0.1, rel=0.01)
    assert abs(t.mean().item()) < 0.001
