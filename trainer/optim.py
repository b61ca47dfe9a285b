"""Optimisers: the reference plain SGD (with a lean step for sparse row gradients), Adam, and
Adam on the rows a batch touches (MF baselines)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

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
    """Dense Adam's result, computed only on the rows a sparse gradient touches
    (``nn.Embedding(sparse=True)``, no weight decay).

    With dense Adam a row the batch does not touch still moves: its gradient is 0 but its
    first moment is not, so it takes steps ``lr_t / bc1_t * beta1^j m / (sqrt(beta2^j v) /
    sqrt(bc2_t) + eps)`` that shrink by ``r = beta1 / sqrt(beta2)`` per step. RowAdam defers
    them: when a row is next touched (or at ``flush()``), the skipped steps are applied at
    once as ``F[s] * m / sqrt(v)`` with ``F[s] = sum_{t > s} c_t r^(t - s)``, ``c_t = lr_t
    sqrt(bc2_t) / bc1_t``, s the row's last step, and its moments are decayed by
    ``beta^(skipped)``; then the touched rows take torch's fused Adam step. ``F`` is kept per
    step and updated over the last W steps only (``r^W < 1e-20``). The one difference from
    dense Adam is that eps is left out of the skipped steps' denominators (tested equal to
    ``torch.optim.Adam`` within float32 rounding when sqrt(v) >> eps).

    A row's deferred steps must be applied before it is read: ``bring_up_to_date(p, rows)``
    before the forward pass of a batch (the training loop does, see train.row_catch_up), and
    ``flush()`` for every row before reading the tables (before each evaluation). A row the
    step touches without having been brought up to date gets its deferred steps in ``step``,
    after its gradient was taken at the stale value ("lazy" Adam).

    Measured on Gowalla (MF-BPR, B = 2048, one thread, the other core busy): 8.2 ms per step
    (2.7 of them bringing rows up to date, 2.7 the step) against 18 ms with dense fused
    Adam, whose step updates all 70,839 x 64 rows; the random-row gathers and scatters
    (~150 us per MB) are most of what is left.
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
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 < beta2 < 1 and beta1 < beta2**0.5):
            raise ValueError(f"betas: {betas!r}, expected 0 <= beta1 < sqrt(beta2) < 1")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @staticmethod
    def _window(beta1: float, beta2: float) -> int:
        r = beta1 / beta2**0.5
        return 1 if r == 0 else max(1, math.ceil(math.log(1e-20) / math.log(r)))

    def _state(self, p: torch.Tensor, beta1: float, beta2: float) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            w = self._window(beta1, beta2)
            r = beta1 / beta2**0.5
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["n"] = 0  # the same count on the host: no device sync per step
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["last"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
            state["F"] = torch.zeros(1024, dtype=torch.float64, device=p.device)
            # r^W, ..., r^1: the weights of step T for the rows last stepped at T-W .. T-1
            powers = torch.arange(w, 0, -1, dtype=torch.float64, device=p.device)
            state["r_powers"] = torch.pow(torch.tensor(r, dtype=torch.float64), powers).to(p.device)
        return state

    @staticmethod
    def _catch_up(
        state: dict[str, Any],
        p_rows: torch.Tensor,
        m_rows: torch.Tensor,
        v_rows: torch.Tensor,
        last: torch.Tensor,
        now: int,
        beta1: float,
        beta2: float,
    ) -> None:
        """Apply, in place, the steps after each row's last one up to step `now` (no grad)."""
        skipped = (now - last).to(torch.float32)[:, None]  # (rows, 1)
        coef = state["F"].index_select(0, last).to(p_rows.dtype)[:, None]
        # m / sqrt(v), 0 where v = 0 (then m = 0 too: the row never had a gradient)
        tiny = torch.finfo(v_rows.dtype).tiny
        p_rows.addcmul_(coef, m_rows * (v_rows + tiny).rsqrt(), value=-1.0)
        m_rows.mul_(torch.pow(beta1, skipped))
        v_rows.mul_(torch.pow(beta2, skipped))

    def _gather_caught_up(
        self, p: torch.Tensor, rows: torch.Tensor, upto: int, beta1: float, beta2: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies of `rows` of p and of its moments, with their deferred steps up to step
        `upto` applied (the state itself is not written)."""
        state = self.state[p]
        p_rows = p.index_select(0, rows)
        m_rows = state["exp_avg"].index_select(0, rows)
        v_rows = state["exp_avg_sq"].index_select(0, rows)
        self._catch_up(state, p_rows, m_rows, v_rows, state["last"][rows], upto, beta1, beta2)
        return p_rows, m_rows, v_rows

    def _commit(self, p: torch.Tensor) -> None:
        """Write back the moments of rows brought up to date whose step did not follow."""
        state = self.state[p]
        pending = state.pop("pending", None)
        if pending is not None:
            rows, _, m_rows, v_rows = pending
            state["exp_avg"].index_copy_(0, rows, m_rows)
            state["exp_avg_sq"].index_copy_(0, rows, v_rows)
            state["last"].index_fill_(0, rows, state["n"])

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
                state = self._state(p, beta1, beta2)
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                now = state["n"] + 1  # this step's number, T
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                pending = state.get("pending")
                if pending is not None and torch.equal(pending[0], rows):
                    # brought up to date before the forward pass: reuse the gathered rows
                    del state["pending"]
                    _, p_rows, m_rows, v_rows = pending
                elif rows.numel():
                    self._commit(p)
                    # bring the rows to step T - 1: F[s] holds c_{s+1..T-1} weighted
                    p_rows, m_rows, v_rows = self._gather_caught_up(p, rows, now - 1, beta1, beta2)
                state["step"] += 1  # the fused kernel reads the step, as torch's Adam does
                state["n"] = now
                if rows.numel():
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
                    state["last"].index_fill_(0, rows, now)
                self._record_step(state, now, group["lr"], beta1, beta2)
        return None

    @staticmethod
    def _record_step(
        state: dict[str, Any], now: int, lr: float, beta1: float, beta2: float
    ) -> None:
        """Add step `now`'s coefficient c_T * r^(T - s) to F[s] for the last W steps s < T."""
        f = state["F"]
        if now >= f.numel():  # grow: one slot per step
            state["F"] = f = torch.cat([f, torch.zeros_like(f)])
        c = lr * (1 - beta2**now) ** 0.5 / (1 - beta1**now)
        powers = state["r_powers"]
        lo = max(0, now - powers.numel())
        f[lo:now].add_(powers[powers.numel() - (now - lo) :], alpha=c)

    @torch.no_grad()
    def bring_up_to_date(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Apply the deferred steps of `rows` (indices into p, repeats allowed) to p now: call
        it before the forward pass that reads them, so that the batch sees dense Adam's
        values. The gathered rows are kept for the next step() on the same rows."""
        state = self.state[p]
        if not state or rows.numel() == 0:
            return
        self._commit(p)
        beta1, beta2 = self.param_groups[0]["betas"]
        rows = torch.unique(rows)  # sorted, as the coalesced gradient's indices
        p_rows, m_rows, v_rows = self._gather_caught_up(p, rows, state["n"], beta1, beta2)
        p.index_copy_(0, rows, p_rows)
        state["pending"] = (rows, p_rows, m_rows, v_rows)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, but each state tensor keeps its own dtype (torch casts them all to the
        parameter's, which would turn the int64 ``last`` rows and float64 ``F`` into float32),
        and the deferred rows of a pending catch-up come back as they were."""
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        saved = state_dict["state"]
        for index, p in enumerate(params):
            if index in saved:
                self.state[p] = {k: _on_device(v, p.device) for k, v in saved[index].items()}

    @torch.no_grad()
    def flush(self) -> None:
        """Apply every row's deferred steps, so that the tables equal dense Adam's now."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    continue
                self._commit(p)
                now = state["n"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                self._catch_up(state, p, m, v, state["last"], now, beta1, beta2)
                state["last"].fill_(now)


def _on_device(value: Any, device: torch.device) -> Any:
    """A copy of `value` (a tensor, or a tuple of them, or a plain value) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, copy=True)
    if isinstance(value, tuple):
        return tuple(_on_device(v, device) for v in value)
    return value


def build_optimizer(
    cfg: TrainConfig, module: Encoder, *, lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """PlainSGD (sgd without weight decay), torch SGD (with weight decay), RowAdam
    (sparse_adam) or Adam, at learning rate ``cfg.lr * lr_scale``."""
    params = list(module.parameters())
    lr = cfg.lr * lr_scale
    if cfg.optimizer == "sparse_adam":
        return RowAdam(params, lr=lr)
    if cfg.optimizer == "sgd":
        if cfg.weight_decay == 0:
            return PlainSGD(params, lr=lr)
        return torch.optim.SGD(params, lr=lr, weight_decay=cfg.weight_decay)
    # fused: one kernel per parameter instead of ~10 elementwise passes (CPU and CUDA)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
