"""The per-batch training loss for each objective: glue between sampler, encoder and losses.

A batch is what the sampler yields: (users, items) for the DirectSpec family and DirectAU,
(users, items, negatives) for BPR; each (B,) int64 on the training device.
"""

from __future__ import annotations

import torch

from contract.config import DIRECTSPEC_FAMILY, TrainConfig
from trainer.encoders import Encoder, RowLookup
from trainer.losses import (
    adaptive_tau,
    alignment_loss,
    balance,
    balance_plus,
    bpr_loss,
    directau_loss,
    l2_penalty,
)
from trainer.sampling import CSR, shared_neighbors

Tensor = torch.Tensor


class PropagatedOnce:
    """An encoder's rows looked up in one computation of its final embeddings (LightGCN: one
    propagation), so that several batches of one step share it."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.users, self.items = encoder.final()

    def rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        return (self.users.index_select(0, users), *(self.items.index_select(0, i) for i in items))

    def ego_rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        return self.encoder.ego_rows(users, *items)


class BatchLoss:
    """Callable computing the scalar training loss of one batch for `cfg.objective`.

    user_graph / item_graph: the training matrix and its transpose as device CSR tensors,
    needed only for adaptive temperatures (pairs of batch users sharing an item, pairs of
    batch items sharing a user).
    """

    def __init__(
        self, cfg: TrainConfig, encoder: Encoder, user_graph: CSR, item_graph: CSR | None
    ) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.user_graph = user_graph
        self.item_graph = item_graph
        if cfg.adaptive_tau and cfg.objective == "directspec+" and item_graph is None:
            raise ValueError("adaptive tau needs the item graph")

    def tau(self, users: Tensor, items: Tensor, dtype: torch.dtype) -> float | Tensor:
        """Scalar tau, or (2, B, B) per-pair temperatures for the stacked users/items."""
        cfg = self.cfg
        if not cfg.adaptive_tau:
            return cfg.tau
        assert self.item_graph is not None
        shared = torch.stack(
            [shared_neighbors(self.user_graph, users), shared_neighbors(self.item_graph, items)]
        )
        return adaptive_tau(shared, cfg.tau_related, cfg.tau_unrelated, dtype)

    def __call__(self, batch: tuple[Tensor, ...]) -> Tensor:
        """The loss of one batch (one propagation for LightGCN)."""
        return self.loss(self.encoder, batch)

    def summed(self, batches: tuple[tuple[Tensor, ...], ...]) -> Tensor:
        """The sum of the batches' losses, all from one propagation of the encoder."""
        if len(batches) == 1:
            return self(batches[0])
        view = PropagatedOnce(self.encoder) if self.encoder.propagates else self.encoder
        return torch.stack([self.loss(view, b) for b in batches]).sum()

    def loss(self, encoder: RowLookup, batch: tuple[Tensor, ...]) -> Tensor:
        """The loss of `batch` with rows looked up in `encoder` (an encoder or a view)."""
        cfg = self.cfg
        if cfg.objective in DIRECTSPEC_FAMILY:
            users, items = batch[0], batch[1]
            e = torch.stack(encoder.rows(users, items))  # (2, B, d): users, items
            if cfg.balancing == "directspec+" and cfg.alpha != 0:
                z = balance_plus(e, cfg.alpha, self.tau(users, items, e.dtype), cfg.shrink_norm)
            else:
                variant = cfg.balancing if cfg.alpha != 0 else "none"
                z = balance(e, cfg.alpha, variant=variant, shrink=cfg.shrink_norm)
            loss = alignment_loss(z[0], z[1])
            if cfg.reg:
                loss = loss + cfg.reg * z.pow(2).sum(dim=(0, 2)).mean()
            return loss
        if cfg.objective == "bpr":
            users, pos, neg = batch
            u, p, n = encoder.rows(users, pos, neg)
            loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
            if cfg.reg:
                loss = loss + cfg.reg * l2_penalty(*encoder.ego_rows(users, pos, neg))
            return loss
        if cfg.objective == "directau":
            users, items = batch[0], batch[1]
            u, i = encoder.rows(users, items)
            loss = directau_loss(u, i, cfg.gamma, cfg.uniformity_t)
            if cfg.reg:
                loss = loss + cfg.reg * l2_penalty(*encoder.ego_rows(users, items))
            return loss
        raise ValueError(f"unknown objective {cfg.objective!r}")
