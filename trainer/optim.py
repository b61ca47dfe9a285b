"""Optimisers: the reference plain SGD (with a lean step for sparse row gradients), Adam, and
Adam on the rows a batch touches (MF baselines)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from contract.config import TrainConfig
from trainer.encoders import Encoder


class PlainSGD(torch.optim.Optimizer):
    """p <- p - lr * grad, nothing else (no momentum, no weight decay): the reference update.

    Same result as ``torch.optim.SGD(params, lr)`` (tested), with a step that is a single
    ``add_`` per parameter. With sparse gradients (``nn.Embedding(sparse=True)``) only the
    batch's rows are touched, which for plain SGD is exactly the dense update; torch's SGD
    spends more time in Python bookkeeping than in that update at B = 256.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"lr: {lr!r}, expected > 0")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("PlainSGD does not take a closure")
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        return None


class RowAdam(torch.optim.Optimizer):
    """Adam applied only to the rows present in a sparse gradient (``nn.Embedding(sparse=True)``).

    "Lazy" Adam (tested against a numpy version): the touched rows' moments and values follow
    ``torch.optim.Adam``'s formula with one step counter per table, the other rows and their
    moments are left as they are. This is ``torch.optim.SparseAdam``'s scheme except for where
    eps goes (SparseAdam adds it before the bias correction of the second moment, which makes
    it ~30x larger at step 1). Faster because the touched rows are gathered once and updated
    by torch's fused Adam kernel, then written back: on Gowalla-sized MF tables at B = 2048 the
    optimiser step takes 4.1 ms instead of SparseAdam's 8.0 ms and dense fused Adam's ~15 ms
    (1 thread).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr: {lr!r}, expected > 0")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("RowAdam does not take a closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise ValueError("RowAdam needs sparse gradients (nn.Embedding(sparse=True))")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                p_rows = p.index_select(0, rows)
                m_rows = exp_avg.index_select(0, rows)
                v_rows = exp_avg_sq.index_select(0, rows)
                state["step"] += 1  # the fused kernel reads the step, as torch's Adam does
                torch._fused_adam_(
                    [p_rows],
                    [values],
                    [m_rows],
                    [v_rows],
                    [],
                    [state["step"]],
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=0.0,
                    eps=group["eps"],
                    amsgrad=False,
                    maximize=False,
                )
                p.index_copy_(0, rows, p_rows)
                exp_avg.index_copy_(0, rows, m_rows)
                exp_avg_sq.index_copy_(0, rows, v_rows)
        return None


def build_optimizer(cfg: TrainConfig, module: Encoder) -> torch.optim.Optimizer:
    """PlainSGD (sgd without weight decay), torch SGD (with weight decay), RowAdam
    (sparse_adam) or Adam."""
    params = list(module.parameters())
    if cfg.optimizer == "sparse_adam":
        return RowAdam(params, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        if cfg.weight_decay == 0:
            return PlainSGD(params, lr=cfg.lr)
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fused: one kernel per parameter instead of ~10 elementwise passes (CPU and CUDA)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
