"""Objectives and the DirectSpec spectrum-balancing transforms, as pure functions on tensors.

Shapes: ``B`` batch rows, ``d`` embedding dimension. Transforms accept any number of leading
dimensions, ``(..., B, d)``, so the user and item batches can be stacked as ``(2, B, d)`` and
transformed in one call (the balancing mixes rows *within* each batch, never across the stack).

Formulas (docs/method.md#objectives):

* DirectSpec:   X~ = X - alpha (X X^T) X                 (X row-normalised)
* DirectSpec+:  X~ = X - alpha softmax_row(tau * X X^T) X   (tau a scalar or a (B, B) matrix)
* shrink_norm:  z = s ||x~|| x~                          (s = 0 means off: z = x~)
* alignment:    L = mean_b -log sigmoid(<z_b, w_b>)
* BPR:          L = mean_b -log sigmoid(s_pos - s_neg)
* DirectAU:     L = mean ||x - y||^2 + gamma (U(x) + U(y)) / 2,
                U(x) = log mean_{a<b} exp(-t ||x_a - x_b||^2), on row-normalised x, y

:func:`balance_plus` is a fused version of normalise -> DirectSpec+ -> shrink_norm with a
hand-written backward (five B x B x d matrix products per step instead of autograd's six, and
fewer temporaries); it is checked against the composition of the plain functions in the tests.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

_EPS = 1e-12


def row_normalize(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm. x: (..., B, d) -> (..., B, d); zero rows stay zero."""
    return F.normalize(x, p=2.0, dim=-1, eps=_EPS)


def directspec_transform(x: Tensor, alpha: float) -> Tensor:
    """Linear all-pass step X - alpha (X X^T) X. x: (..., B, d) row-normalised -> (..., B, d).

    Computed as X - alpha X (X^T X), which is the same matrix with a d x d instead of a B x B
    intermediate. In SVD terms each singular value sigma becomes sigma (1 - alpha sigma^2).
    """
    gram = x.transpose(-1, -2) @ x  # (..., d, d)
    return x - alpha * (x @ gram)


def directspec_plus_transform(x: Tensor, alpha: float, tau: float | Tensor) -> Tensor:
    """Self-paced step X - alpha softmax_row(tau * X X^T) X.

    x: (..., B, d) row-normalised. tau: a scalar or a (..., B, B) matrix of per-pair
    temperatures (adaptive tau, see :func:`adaptive_tau`). Returns (..., B, d).
    """
    logits = tau * (x @ x.transpose(-1, -2))  # (..., B, B)
    return x - alpha * (torch.softmax(logits, dim=-1) @ x)


def shrink_norm(x: Tensor, s: float) -> Tensor:
    """z = s ||x|| x row-wise (norm scaling); s = 0 leaves x unchanged. (..., B, d) -> same."""
    if s == 0:
        return x
    return x * (s * x.norm(dim=-1, keepdim=True))


def adaptive_tau(
    shared: Tensor, tau0: float, tau1: float, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Per-pair temperatures: tau0 where ``shared`` (bool (..., B, B)) is true, else tau1."""
    return torch.where(shared, tau0, tau1).to(dtype)


def alignment_loss(z: Tensor, w: Tensor) -> Tensor:
    """mean_b -log sigmoid(<z_b, w_b>). z, w: (B, d) -> scalar."""
    return -F.logsigmoid((z * w).sum(dim=-1)).mean()


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """mean_b -log sigmoid(pos_b - neg_b). pos_scores, neg_scores: (B,) -> scalar."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_penalty(*rows: Tensor) -> Tensor:
    """LightGCN-style L2 term: sum of squares of all `rows` / (2 B), B = rows[0].shape[0]."""
    total = sum((r.pow(2).sum() for r in rows), torch.zeros((), device=rows[0].device))
    return total / (2 * rows[0].shape[0])


def directau_alignment(x: Tensor, y: Tensor) -> Tensor:
    """mean_b ||x_b - y_b||^2 for row-normalised x, y: (B, d) -> scalar."""
    return (x - y).pow(2).sum(dim=-1).mean()


def directau_uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log mean_{a<b} exp(-t ||x_a - x_b||^2) over distinct row pairs. x: (B, d), B >= 2.

    Squared distances come from the Gram matrix (|x_a|^2 + |x_b|^2 - 2 <x_a, x_b>), one GEMM
    instead of torch.pdist, whose CPU backward is several times slower; log-sum-exp keeps it
    stable.
    """
    b = x.shape[0]
    sq = (x * x).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)  # (B, B)
    upper = torch.ones(b, b, dtype=torch.bool, device=x.device).triu_(1)  # pairs a < b
    logits = (d2 * -t).masked_fill(~upper, -math.inf)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(b * (b - 1) / 2)


def directau_loss(u: Tensor, i: Tensor, gamma: float, t: float = 2.0) -> Tensor:
    """DirectAU: alignment + gamma (uniformity(users) + uniformity(items)) / 2.

    u, i: (B, d) raw embeddings of positive pairs; normalised here.
    """
    x, y = row_normalize(u), row_normalize(i)
    return directau_alignment(x, y) + gamma * 0.5 * (
        directau_uniformity(x, t) + directau_uniformity(y, t)
    )


def balance(
    e: Tensor,
    alpha: float,
    *,
    variant: str = "directspec+",
    tau: float | Tensor = 3.0,
    shrink: float = 0.0,
) -> Tensor:
    """Reference composition: normalise rows, balance the spectrum, apply shrink_norm.

    e: (..., B, d) raw embeddings. variant: "directspec+" (softmax), "directspec" (linear) or
    "none" (alpha ignored; used by alignment-only training). Returns z: (..., B, d).
    """
    x = row_normalize(e)
    match variant:
        case "directspec+":
            x = directspec_plus_transform(x, alpha, tau)
        case "directspec":
            x = directspec_transform(x, alpha)
        case "none":
            pass
        case _:
            raise ValueError(f"unknown balancing variant {variant!r}")
    return shrink_norm(x, shrink)


def _matmul(a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
    """alpha (a @ b), with the scaling done inside the BLAS call for 3-D operands."""
    if a.dim() == 3 and alpha != 1.0:
        out = torch.empty(a.shape[0], a.shape[1], b.shape[2], dtype=a.dtype, device=a.device)
        return torch.baddbmm(out, a, b, beta=0.0, alpha=alpha)
    return a @ b if alpha == 1.0 else (a @ b).mul_(alpha)


def _add_matmul(c: Tensor, a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """c + alpha (a @ b) in one BLAS call for 2-D and 3-D operands."""
    if c.dim() == 2:
        return torch.addmm(c, a, b, alpha=alpha)
    if c.dim() == 3:
        return torch.baddbmm(c, a, b, alpha=alpha)
    return c + alpha * (a @ b)


class _BalancePlus(torch.autograd.Function):
    """normalise -> DirectSpec+ -> shrink_norm with an analytic backward (see balance_plus).

    Per (B, d) block: 2 B x B x d products forward, 3 backward, and 4 elementwise passes over
    the B x B matrices (softmax, two in the softmax backward, one symmetrisation).
    """

    @staticmethod
    def forward(ctx: Any, e: Tensor, alpha: float, tau: float | Tensor, shrink: float) -> Tensor:
        n = e.norm(dim=-1, keepdim=True).clamp_min(_EPS)  # (..., B, 1)
        x = e / n
        xt = x.transpose(-1, -2)
        if isinstance(tau, Tensor):
            logits = (x @ xt).mul_(tau)
        else:
            logits = _matmul(x, xt, float(tau))
        p = logits.softmax(dim=-1)  # (..., B, B), rows sum to 1
        px = p @ x  # (..., B, d)
        y = x - alpha * px
        if shrink != 0:
            r = y.norm(dim=-1, keepdim=True)
            z = y * (shrink * r)
        else:
            r = torch.ones_like(n)
            z = y
        tau_t = tau if isinstance(tau, Tensor) else None
        ctx.save_for_backward(n, x, p, px, y, r, tau_t)
        ctx.alpha, ctx.tau, ctx.shrink = alpha, tau, shrink
        return z

    @staticmethod
    def backward(ctx: Any, gz: Tensor) -> tuple[Tensor | None, ...]:
        n, x, p, px, y, r, tau_t = ctx.saved_tensors
        alpha, shrink = ctx.alpha, ctx.shrink
        # z = s r y  =>  gy = s (r gz + y <y, gz> / r)
        if shrink != 0:
            gy = shrink * (r * gz + y * ((y * gz).sum(-1, keepdim=True) / r.clamp_min(_EPS)))
        else:
            gy = gz
        # y = x - alpha p x  =>  gp = -alpha gy x^T ; gx = gy - alpha p^T gy
        gp = _matmul(gy, x.transpose(-1, -2), -alpha)  # (..., B, B)
        gx = _add_matmul(gy, p.transpose(-1, -2), gy, -alpha)
        # p = softmax(a), a = tau * s  =>  ga = p * (gp - rowsum(gp * p)); the row sums are
        # rowsum(gp * p)_a = -alpha <gy_a, (p x)_a>, computed on (B, d) instead of (B, B)
        rowsum = (gy * px).sum(-1, keepdim=True).mul_(-alpha)
        ga = gp.sub_(rowsum).mul_(p)
        # s = x x^T, a = tau * s  =>  gx += (gs + gs^T) x with gs = tau * ga
        if tau_t is not None:
            ga.mul_(tau_t)
            scale = 1.0
        else:
            scale = float(ctx.tau)
        gx = _add_matmul(gx, ga + ga.transpose(-1, -2), x, scale)
        # x = e / |e|  =>  ge = (gx - x <x, gx>) / |e|
        ge = (gx - x * (x * gx).sum(-1, keepdim=True)) / n
        return ge, None, None, None


def balance_plus(e: Tensor, alpha: float, tau: float | Tensor, shrink: float = 0.0) -> Tensor:
    """Fused ``balance(e, alpha, variant="directspec+", tau=tau, shrink=shrink)``.

    e: (..., B, d) raw rows; tau a scalar or (..., B, B) (not differentiated). Same values and
    gradients as the composition, computed with fewer kernels; used on the training hot path.
    """
    return _BalancePlus.apply(e, float(alpha), tau, float(shrink))
