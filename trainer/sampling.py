"""Vectorised batch samplers and per-batch co-interaction masks (torch, on the training device).

A whole epoch of indices is drawn with a handful of tensor ops on the device, then sliced per
step: no per-step host/device round trips, no Python loops over users.

Each sampler draws ``n_train // (B * world_size)`` batches per epoch: with several
data-parallel ranks (trainer.distributed) each draws its share, from its own generator.

* :class:`UserItemSampler` (DirectSpec family, the reference scheme): B users uniformly with
  replacement among users that have training items, and for each one uniformly random training
  item: ``item = indices[indptr[u] + floor(rand * deg[u])]``. Steps per epoch = n_train // B.
* :class:`PairSampler` (BPR, DirectAU): (user, item) uniformly over training pairs, plus, when
  asked, one uniform negative item per pair that the user has not interacted with.
* :func:`shared_neighbors`: for a batch of rows of a binary CSR matrix, which pairs of rows share
  at least one column (users sharing an item, items sharing a user), i.e. R_b R_b^T > 0 from
  the batch rows' entries only (never a dense m x m or n x n mask).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

Tensor = torch.Tensor


class CSR:
    """A binary CSR matrix as device tensors: indptr (rows + 1,) int64, indices (nnz,) int64."""

    def __init__(self, matrix: sp.csr_matrix, device: torch.device) -> None:
        matrix = sp.csr_matrix(matrix)
        matrix.sum_duplicates()
        matrix.sort_indices()
        self.shape = matrix.shape
        self.indptr = torch.as_tensor(matrix.indptr.astype(np.int64), device=device)
        self.indices = torch.as_tensor(matrix.indices.astype(np.int64), device=device)
        self.degree = self.indptr[1:] - self.indptr[:-1]  # (rows,)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def row_entries(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Nonzeros of the given rows: (position in `rows`, column), each (sum deg,) int64."""
        deg = self.degree[rows]
        pos = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), deg)
        first = torch.cumsum(deg, 0) - deg  # offset of each row's block in the output
        offset = torch.arange(len(pos), device=rows.device) - first[pos]
        return pos, self.indices[self.indptr[rows][pos] + offset]


def shared_neighbors(csr: CSR, rows: Tensor) -> Tensor:
    """bool (B, B): entry (a, b) is true iff rows[a] and rows[b] share at least one column.

    Sparse, from the batch's own entries only (never a dense m x m / n x n mask): the entries
    are grouped by column, and every two batch positions inside one group are a sharing
    pair. Work and memory are O(sum over columns of g^2), g = batch rows holding the column
    (at most nnz(batch rows) x B). This is (R_b R_b^T > 0) without a sparse-sparse product,
    which costs ~3 ms per call on CPU. A row with no entries shares nothing, not even with
    itself.
    """
    b = len(rows)
    dev = rows.device
    pos, cols = csr.row_entries(rows)
    mask = torch.zeros(b, b, dtype=torch.bool, device=dev)
    if len(cols) == 0:
        return mask
    cols, order = torch.sort(cols, stable=True)
    pos = pos[order]
    new_group = torch.ones(len(cols), dtype=torch.bool, device=dev)
    new_group[1:] = cols[1:] != cols[:-1]
    group = torch.cumsum(new_group.long(), 0) - 1  # (nnz,) group id of each entry
    starts = torch.nonzero(new_group).flatten()  # (G,) first entry of each group
    sizes = torch.diff(starts, append=torch.tensor([len(cols)], device=dev))  # (G,)
    reps = sizes[group]  # each entry pairs with every entry of its group
    left = torch.repeat_interleave(pos, reps)
    first = torch.repeat_interleave(starts[group], reps)
    offset = torch.arange(len(left), device=dev) - torch.repeat_interleave(
        torch.cumsum(reps, 0) - reps, reps
    )
    mask[left, pos[first + offset]] = True
    return mask


def steps_per_epoch(n_pairs: int, batch_size: int, world_size: int = 1) -> int:
    """Batches one rank draws per epoch: n_pairs // B shared among the ranks (at least 1)."""
    return max(n_pairs // batch_size // world_size, 1)


class UserItemSampler:
    """Reference sampling: users uniform with replacement, one random training item each."""

    def __init__(
        self, csr: CSR, batch_size: int, generator: torch.Generator, *, world_size: int = 1
    ) -> None:
        self.csr = csr
        self.batch_size = batch_size
        self.generator = generator
        self.active_users = torch.nonzero(csr.degree > 0).flatten()  # (m_active,)
        if len(self.active_users) == 0:
            raise ValueError("no user has a training interaction")
        self.steps_per_epoch = steps_per_epoch(csr.nnz, batch_size, world_size)

    def sample(self, count: int) -> tuple[Tensor, Tensor]:
        """`count` (user, item) draws: two (count,) int64 tensors on the CSR's device."""
        dev = self.csr.indptr.device
        pick = torch.randint(len(self.active_users), (count,), generator=self.generator, device=dev)
        users = self.active_users[pick]
        deg = self.csr.degree[users]
        offset = (torch.rand(count, generator=self.generator, device=dev) * deg).long()
        offset = torch.minimum(offset, deg - 1)  # rand() < 1, but float rounding can reach deg
        return users, self.csr.indices[self.csr.indptr[users] + offset]

    def epoch(self) -> Iterator[tuple[Tensor, ...]]:
        """Yield steps_per_epoch batches (users (B,), items (B,))."""
        steps, b = self.steps_per_epoch, self.batch_size
        users, items = self.sample(steps * b)
        users, items = users.view(steps, b), items.view(steps, b)
        for k in range(steps):
            yield users[k], items[k]


class PairSampler:
    """Training pairs uniformly (with replacement), optionally with uniform unseen negatives."""

    def __init__(
        self,
        csr: CSR,
        batch_size: int,
        generator: torch.Generator,
        *,
        negatives: bool,
        max_rounds: int = 100,
        world_size: int = 1,
    ) -> None:
        self.csr = csr
        self.batch_size = batch_size
        self.generator = generator
        self.negatives = negatives
        self.max_rounds = max_rounds
        dev = csr.indptr.device
        self.pair_users = torch.repeat_interleave(
            torch.arange(csr.shape[0], device=dev), csr.degree
        )
        self.pair_items = csr.indices
        if len(self.pair_users) == 0:
            raise ValueError("no training interactions")
        # sorted keys user * n + item for vectorised membership tests (CSR order is sorted)
        self.keys = self.pair_users * csr.shape[1] + self.pair_items
        self.steps_per_epoch = steps_per_epoch(csr.nnz, batch_size, world_size)

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """bool (k,): whether each (user, item) is a training pair."""
        q = users * self.csr.shape[1] + items
        pos = torch.searchsorted(self.keys, q).clamp_max(len(self.keys) - 1)
        return self.keys[pos] == q

    def sample(self, count: int) -> tuple[Tensor, ...]:
        """(users, items) or (users, items, negatives), each (count,) int64."""
        dev = self.csr.indptr.device
        idx = torch.randint(len(self.pair_users), (count,), generator=self.generator, device=dev)
        users, items = self.pair_users[idx], self.pair_items[idx]
        if not self.negatives:
            return users, items
        n_items = self.csr.shape[1]
        neg = torch.randint(n_items, (count,), generator=self.generator, device=dev)
        # Redraw collisions with positives until none is left. This runs once per epoch (a
        # few host syncs per epoch, none per step); `max_rounds` bounds it for users who have
        # interacted with (almost) every item.
        for _ in range(self.max_rounds):
            bad = torch.nonzero(self.is_positive(users, neg)).flatten()
            if len(bad) == 0:
                break
            neg[bad] = torch.randint(n_items, (len(bad),), generator=self.generator, device=dev)
        return users, items, neg

    def epoch(self) -> Iterator[tuple[Tensor, ...]]:
        steps, b = self.steps_per_epoch, self.batch_size
        drawn = [t.view(steps, b) for t in self.sample(steps * b)]
        for k in range(steps):
            yield tuple(t[k] for t in drawn)
