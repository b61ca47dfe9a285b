"""Objectives and transforms against an independent numpy computation of each formula.

Values are compared with numpy implementations written from docs/method.md; gradients
with central finite differences of those numpy functions (float64), so nothing here reuses
the torch code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.losses import (
    adaptive_tau,
    alignment_loss,
    balance,
    balance_plus,
    bpr_loss,
    directau_loss,
    directspec_plus_transform,
    directspec_transform,
    l2_penalty,
    row_normalize,
    shrink_norm,
)

# ----------------------------------------------------------------------------- numpy side


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_softmax_rows(a):
    a = a - a.max(axis=-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=-1, keepdims=True)


def np_transform(x, alpha, variant, tau):
    if variant == "directspec+":
        return x - alpha * np_softmax_rows(tau * (x @ x.T)) @ x
    if variant == "directspec":
        return x - alpha * (x @ x.T) @ x
    return x


def np_shrink(x, s):
    return x if s == 0 else s * np.linalg.norm(x, axis=-1, keepdims=True) * x


def np_log_sigmoid(v):
    return -np.log1p(np.exp(-v))


def np_directspec_loss(eu, ei, alpha, variant, tau_u, tau_i, s, reg=0.0):
    """Alignment loss on balanced, shrunk embeddings of a user batch and an item batch."""
    z = np_shrink(np_transform(np_normalize(eu), alpha, variant, tau_u), s)
    w = np_shrink(np_transform(np_normalize(ei), alpha, variant, tau_i), s)
    loss = -np_log_sigmoid((z * w).sum(1)).mean()
    return loss + reg * ((z**2).sum(1) + (w**2).sum(1)).mean()


def numeric_grad(f, *arrays, eps=1e-6):
    """Central differences of scalar f w.r.t. each array (float64)."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
        grads.append(g)
    return grads


def t(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ----------------------------------------------------------------------------- hand-worked


def test_alignment_of_zero_vectors_is_log2():
    z = torch.zeros(4, 3)
    assert alignment_loss(z, z).item() == pytest.approx(math.log(2), rel=1e-6)


def test_linear_directspec_on_orthonormal_rows_scales_by_one_minus_alpha():
    # X X^T = I for orthonormal rows, so X~ = (1 - alpha) X: every singular value 1 -> 1 - alpha
    x = torch.eye(4, dtype=torch.float64)[:3]
    out = directspec_transform(x, 0.3)
    np.testing.assert_allclose(out.numpy(), 0.7 * x.numpy(), atol=1e-12)


def test_directspec_plus_on_orthonormal_rows_hand_worked():
    # S = I: each softmax row puts e^tau / (e^tau + B - 1) on itself and 1 / (e^tau + B - 1)
    # on every other row
    b, tau, alpha = 3, 2.0, 0.5
    x = torch.eye(b, dtype=torch.float64)
    denom = math.exp(tau) + b - 1
    p = np.full((b, b), 1 / denom)
    np.fill_diagonal(p, math.exp(tau) / denom)
    out = directspec_plus_transform(x, alpha, tau)
    np.testing.assert_allclose(out.numpy(), np.eye(b) - alpha * p, atol=1e-12)


def test_shrink_norm_scales_each_row_by_s_times_its_norm():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    out = shrink_norm(x, 0.1)
    np.testing.assert_allclose(out.numpy(), [[1.5, 2.0], [0.0, 0.4]], atol=1e-12)
    assert shrink_norm(x, 0.0) is x  # s = 0 is "off"


def test_row_normalize_unit_rows_and_zero_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(row_normalize(x).numpy(), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_adaptive_tau_picks_tau0_for_shared_pairs():
    shared = torch.tensor([[True, False], [False, True]])
    np.testing.assert_array_equal(adaptive_tau(shared, 2.5, 3.0).numpy(), [[2.5, 3.0], [3.0, 2.5]])


# ----------------------------------------------------------------------------- value + gradient


CASES = [
    # (variant, alpha, tau kind, shrink, reg)
    ("directspec+", 1.0, "scalar", 0.03, 0.0),
    ("directspec+", 0.7, "scalar", 0.0, 0.0),
    ("directspec+", 0.8, "matrix", 0.5, 0.0),
    ("directspec+", 1.0, "scalar", 0.3, 0.01),
    ("directspec", 0.05, "scalar", 0.5, 0.0),
    ("none", 0.0, "scalar", 0.5, 0.0),
]


@pytest.mark.parametrize(("variant", "alpha", "tau_kind", "s", "reg"), CASES)
def test_directspec_family_loss_value_and_gradient(rng, variant, alpha, tau_kind, s, reg):
    b, d = 5, 3
    eu, ei = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    if tau_kind == "matrix":
        mask_u, mask_i = rng.random((b, b)) < 0.5, rng.random((b, b)) < 0.5
        tau_u, tau_i = np.where(mask_u, 2.5, 3.0), np.where(mask_i, 2.5, 3.0)
    else:
        tau_u = tau_i = 3.0

    def f(a, c):
        return np_directspec_loss(a, c, alpha, variant, tau_u, tau_i, s, reg)

    want = f(eu, ei)
    gu_want, gi_want = numeric_grad(f, eu, ei)

    tu = tau_u if tau_kind == "scalar" else torch.tensor(tau_u)
    ti = tau_i if tau_kind == "scalar" else torch.tensor(tau_i)
    xu, xi = t(eu), t(ei)
    z = balance(xu, alpha, variant=variant, tau=tu, shrink=s)
    w = balance(xi, alpha, variant=variant, tau=ti, shrink=s)
    loss = alignment_loss(z, w) + reg * (z.pow(2).sum(1) + w.pow(2).sum(1)).mean()
    loss.backward()
    assert loss.item() == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(xu.grad.numpy(), gu_want, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(xi.grad.numpy(), gi_want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("tau_kind", "s"), [("scalar", 0.03), ("scalar", 0.0), ("matrix", 0.4)])
def test_fused_balance_plus_matches_numpy_value_and_gradient(rng, tau_kind, s):
    # stacked users/items (2, B, d): the fused op must balance each batch separately
    b, d, alpha = 6, 4, 0.9
    e = rng.normal(size=(2, b, d))
    if tau_kind == "matrix":
        tau = np.where(rng.random((2, b, b)) < 0.4, 2.5, 3.0)
        taus = (tau[0], tau[1])
        tau_arg = torch.tensor(tau)
    else:
        taus = (3.0, 3.0)
        tau_arg = 3.0
    weights = rng.normal(size=(2, b, d))  # a linear read-out makes every output entry matter

    def f(x):
        out = [
            np_shrink(np_transform(np_normalize(x[k]), alpha, "directspec+", taus[k]), s)
            for k in range(2)
        ]
        return float((np.stack(out) * weights).sum())

    want = np.stack(
        [
            np_shrink(np_transform(np_normalize(e[k]), alpha, "directspec+", taus[k]), s)
            for k in range(2)
        ]
    )
    (g_want,) = numeric_grad(f, e)
    x = t(e)
    out = balance_plus(x, alpha, tau_arg, s)
    (out * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g_want, rtol=1e-5, atol=1e-8)


def test_fused_balance_plus_agrees_with_autograd_composition_in_float32():
    torch.manual_seed(0)
    e = torch.randn(2, 256, 64)
    tau = torch.where(torch.rand(2, 256, 256) < 0.3, 2.5, 3.0)
    g = torch.randn(2, 256, 64)
    a = e.clone().requires_grad_()
    b = e.clone().requires_grad_()
    za = balance_plus(a, 1.0, tau, 0.03)
    zb = torch.stack([balance(b[k], 1.0, tau=tau[k], shrink=0.03) for k in range(2)])
    (za * g).sum().backward()
    (zb * g).sum().backward()
    torch.testing.assert_close(za, zb, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6)


def test_bpr_loss_with_l2_value_and_gradient(rng):
    b, d, reg = 4, 3, 0.1
    u, p, n = (rng.normal(size=(b, d)) for _ in range(3))

    def f(u, p, n):
        diff = (u * p).sum(1) - (u * n).sum(1)
        return -np_log_sigmoid(diff).mean() + reg * ((u**2).sum() + (p**2).sum() + (n**2).sum()) / (
            2 * b
        )

    want = f(u, p, n)
    grads = numeric_grad(f, u, p, n)
    tu, tp, tn = t(u), t(p), t(n)
    loss = bpr_loss((tu * tp).sum(1), (tu * tn).sum(1)) + reg * l2_penalty(tu, tp, tn)
    loss.backward()
    assert loss.item() == pytest.approx(want, rel=1e-10)
    for got, g in zip((tu, tp, tn), grads, strict=True):
        np.testing.assert_allclose(got.grad.numpy(), g, rtol=1e-5, atol=1e-8)


def test_directau_loss_value_and_gradient(rng):
    b, d, gamma, temp = 5, 3, 0.7, 2.0
    u, i = rng.normal(size=(b, d)), rng.normal(size=(b, d))

    def uniformity(x):
        vals = [
            np.exp(-temp * ((x[a] - x[c]) ** 2).sum()) for a in range(b) for c in range(a + 1, b)
        ]
        return np.log(np.mean(vals))

    def f(u, i):
        x, y = np_normalize(u), np_normalize(i)
        align = ((x - y) ** 2).sum(1).mean()
        return align + gamma * (uniformity(x) + uniformity(y)) / 2

    want = f(u, i)
    gu, gi = numeric_grad(f, u, i)
    tu, ti = t(u), t(i)
    loss = directau_loss(tu, ti, gamma, temp)
    loss.backward()
    assert loss.item() == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(tu.grad.numpy(), gu, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ti.grad.numpy(), gi, rtol=1e-5, atol=1e-8)


def test_directspec_plus_is_stable_for_large_tau():
    x = row_normalize(torch.randn(8, 4, dtype=torch.float64))
    out = directspec_plus_transform(x, 1.0, 500.0)
    assert torch.isfinite(out).all()
