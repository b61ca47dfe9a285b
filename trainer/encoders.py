"""Embedding encoders: matrix factorisation and LightGCN (torch).

Both implement ``Encoder``, the protocol the training loop needs:

* ``final()`` -> (U (m, d), I (n, d)): the embeddings used for scoring (LightGCN: propagated),
  differentiable w.r.t. the parameters.
* ``rows(users, *item_batches)`` -> final embeddings of just those rows, (B, d) each.
* ``ego_rows(users, *item_batches)`` -> layer-0 (parameter) rows, for L2 penalties.

MF looks rows up directly (with ``sparse=True`` the gradient touches only the batch's rows, which
plain SGD turns into a row update identical to the dense one). LightGCN does one full sparse
propagation per call of ``rows`` (what the reference does); the adjacency is a torch sparse CSR
matrix built from the training pairs, never a dense (m + n)^2 matrix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any, Protocol, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

Tensor = torch.Tensor


def init_table(
    rows: int,
    dim: int,
    *,
    init: str,
    std: float,
    fan_rows: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(rows, dim) float32 initial table.

    "xavier": U(-b, b) with b = sqrt(6 / (fan_rows + dim)) (fan_rows defaults to rows; the
    reference LightGCN uses one table of m + n rows). "normal": N(0, std^2).
    """
    t = torch.empty(rows, dim)
    match init:
        case "xavier":
            bound = math.sqrt(6.0 / ((fan_rows or rows) + dim))
            t.uniform_(-bound, bound, generator=generator)
        case "normal":
            t.normal_(0.0, std, generator=generator)
        case _:
            raise ValueError(f"unknown init {init!r}")
    return t


class RowLookup(Protocol):
    """What a batch loss needs: row lookups, in batch order, on the encoder's device."""

    def rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        """Scoring rows of a batch: (B, d) for `users`, then (B, d) for each item index tensor."""
        ...

    def ego_rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        """Layer-0 (trainable table) rows of a batch, for L2 penalties; MF: same as rows."""
        ...


class Encoder(RowLookup, Protocol):
    """What the training loop, the objectives and the evaluation need from an encoder (MF,
    LightGCN). ``propagates``: rows() computes the final embeddings of all rows (LightGCN),
    so batches of one step should share one computation (objectives.PropagatedOnce)."""

    propagates: bool

    def final(self) -> tuple[Tensor, Tensor]:
        """Scoring embeddings: users (m, d), items (n, d)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Self: ...

    def eval(self) -> Self: ...


class MF(nn.Module):
    """Two embedding tables: users (m, d) and items (n, d). Score = u^T v."""

    propagates = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        *,
        sparse: bool = False,
        init: str = "xavier",
        std: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim, sparse=sparse)
        self.item = nn.Embedding(n_items, dim, sparse=sparse)
        with torch.no_grad():
            self.user.weight.copy_(
                init_table(n_users, dim, init=init, std=std, generator=generator)
            )
            self.item.weight.copy_(
                init_table(n_items, dim, init=init, std=std, generator=generator)
            )

    def final(self) -> tuple[Tensor, Tensor]:
        return self.user.weight, self.item.weight

    def rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        return (self.user(users), *(self.item(i) for i in items))

    ego_rows = rows


def normalized_adjacency(train: sp.spmatrix, device: torch.device | str = "cpu") -> Tensor:
    """Symmetric-normalised bipartite adjacency D^-1/2 A D^-1/2 as a torch sparse CSR tensor.

    train: (m, n) binary interactions. A = [[0, R], [R^T, 0]] of shape (m + n, m + n); rows with
    degree 0 stay zero. float32, on `device`.
    """
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0
    r.sum_duplicates()
    r.data[:] = 1.0
    m, n = r.shape
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    a = sp.diags(inv_sqrt) @ a @ sp.diags(inv_sqrt)
    a = sp.csr_matrix(a, dtype=np.float32)
    a.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.as_tensor(a.indptr.astype(np.int64)),
            torch.as_tensor(a.indices.astype(np.int64)),
            torch.as_tensor(a.data),
            size=(m + n, m + n),
        ).to(device)


class _SymmetricSpMM(torch.autograd.Function):
    """adj @ e for a constant symmetric sparse adj; backward is adj @ grad (no transpose).

    torch's generic sparse-mm backward transposes the CSR matrix on every call, which makes a
    LightGCN step about twice as slow on CPU.
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, e: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, e)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad)


def propagate(adj: Tensor, e0: Tensor, n_layers: int) -> Tensor:
    """LightGCN: mean of layers 0..K with e_{k+1} = adj @ e_k.

    adj: (N, N) sparse and symmetric (as built by normalized_adjacency); e0: (N, d) -> (N, d).
    """
    total, e = e0, e0
    for _ in range(n_layers):
        e = _SymmetricSpMM.apply(adj, e)
        total = total + e
    return total / (n_layers + 1)


class LightGCN(nn.Module):
    """One (m + n, d) table propagated K layers over the normalised bipartite graph."""

    propagates = True

    def __init__(
        self,
        train: sp.spmatrix,
        dim: int,
        *,
        n_layers: int = 3,
        init: str = "xavier",
        std: float = 0.1,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = train.shape
        self.n_layers = n_layers
        n = self.n_users + self.n_items
        self.embedding = nn.Parameter(init_table(n, dim, init=init, std=std, generator=generator))
        self.adj: Tensor
        self.register_buffer("adj", normalized_adjacency(train), persistent=False)
        self.to(device)

    def final(self) -> tuple[Tensor, Tensor]:
        out = propagate(self.adj, self.embedding, self.n_layers)
        return out[: self.n_users], out[self.n_users :]

    def rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        u, i = self.final()
        return (u.index_select(0, users), *(i.index_select(0, it) for it in items))

    def ego_rows(self, users: Tensor, *items: Tensor) -> tuple[Tensor, ...]:
        e = self.embedding
        return (
            e.index_select(0, users),
            *(e.index_select(0, it + self.n_users) for it in items),
        )
