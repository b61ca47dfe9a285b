"""Data-parallel training over torch.distributed (torchrun; gloo on CPU, NCCL on CUDA).

Every rank holds the whole model and draws its own batches (its sampler seeded by rank); after
each backward pass the gradients are averaged across ranks and every rank takes the same
optimiser step, so the parameters stay identical everywhere (they are also broadcast from rank
0 once, at the start). What travels per step:

* a dense gradient (LightGCN's table, MF with dense Adam): one ``all_reduce`` of the whole
  table, as DDP would do;
* sparse gradients (MF with plain SGD or sparse_adam: ``nn.Embedding(sparse=True)``): the rows
  the step touched, from every rank, in one ``all_gather`` of a fixed-size buffer (the most
  rows a step can touch, a bound set by the batch size, never by the table size), after
  which each rank sums the gathered rows itself.

DDP itself is not used: it hooks ``module.forward``, which the encoders' row lookups and
LightGCN's shared propagation do not go through, and it all-reduces sparse gradients as
dense ones. The collectives are torch.distributed's own.

A rank that dies makes torchrun stop the others; a rank that hangs makes the others' next
collective fail after the process group's timeout (``init_world(timeout_s)``).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from trainer.launch import DEFAULT_TIMEOUT_S

Tensor = torch.Tensor
T = TypeVar("T")

#: Environment variables torchrun sets for each rank.
RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (one process: ``World.single()``)."""

    rank: int
    size: int
    local_rank: int
    backend: str | None  # None: no process group (one process)

    @classmethod
    def single(cls) -> World:
        return cls(rank=0, size=1, local_rank=0, backend=None)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun launch (WORLD_SIZE > 1 in the env)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group torchrun set up (env://): NCCL on CUDA, else gloo.

    On CUDA each rank takes GPU ``LOCAL_RANK``. Without torchrun's environment (WORLD_SIZE
    unset or 1) nothing is initialised and ``World.single()`` is returned.
    """
    if not launched_by_torchrun():
        return World.single()
    missing = [name for name in RANK_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE > 1 but {missing} unset: launch with torchrun")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(
            f"data-parallel training runs on cpu (gloo) or cuda (NCCL), not {device}"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(
        rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, backend=backend
    )


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: on CUDA, GPU LOCAL_RANK (unless one was named); else as is."""
    if device.type == "cuda" and world.parallel and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The sampler seed of `rank` (rank 0 keeps `seed`: a one-rank run is the plain run)."""
    return seed + 1_000_003 * rank


def close_world(world: World) -> None:
    """Leave the process group once every rank got here (rank 0 may still be publishing:
    a gloo rank that tears its group down while a peer is busy aborts at exit). Only on
    success: a rank that failed just exits, and torchrun stops the others."""
    if world.parallel and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End a rank's process with `code` once its work is durable (rank 0 has published):
    flush stdio and leave without interpreter finalization, during which gloo's worker
    threads can still hold tensors and abort the process (pytorch/pytorch#179291)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ----------------------------------------------------------------------------- collectives


def broadcast_parameters(params: Iterable[Tensor], world: World) -> None:
    """Make every rank's parameters rank 0's (in place)."""
    if not world.parallel:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def sum_scalars(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum over ranks of a few float64 scalars (one collective)."""
    if not world.parallel:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any (one collective)."""
    if not world.parallel:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(value: T, world: World) -> list[T]:
    """`value` (picklable: e.g. a dict of CPU tensors) of every rank, in rank order."""
    if not world.parallel:
        return [value]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, value)
    return out  # type: ignore[return-value]  # each rank's `value`


def gather_strings(value: str, world: World) -> list[str]:
    """`value` of every rank, in rank order."""
    if not world.parallel:
        return [value]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, value)
    return [str(v) for v in out]


class GradientAverager:
    """Averages the gradients of `params` across ranks, in place, after a backward pass.

    ``max_rows[i]`` > 0 marks ``params[i]`` as having sparse row gradients
    (``nn.Embedding(sparse=True)``) of at most that many rows per step (e.g. B x S users for
    the user table): the size of the buffer that carries them. 0 marks a dense gradient. All
    sparse parameters must have the same number of columns; their rows travel together, in
    one all_gather per step. Every rank runs the same collectives whatever it touched (a
    missing gradient counts as zero).
    """

    def __init__(self, params: Sequence[Tensor], world: World, max_rows: Sequence[int]) -> None:
        if len(params) != len(max_rows):
            raise ValueError("one max_rows entry per parameter")
        self.dense = [p for p, k in zip(params, max_rows, strict=True) if k == 0]
        self.sparse = [(p, k) for p, k in zip(params, max_rows, strict=True) if k > 0]
        self.world = world

    def __call__(self) -> None:
        if not self.world.parallel:
            return
        with torch.no_grad():
            for p in self.dense:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if p.grad.is_sparse:
                    raise RuntimeError("a sparse gradient on a parameter declared dense")
                dist.all_reduce(p.grad)
                p.grad.div_(self.world.size)
            if self.sparse:
                self._average_sparse()

    def _average_sparse(self) -> None:
        """One all_gather of (values, row, table) records for every sparse gradient."""
        world = self.world
        params = [p for p, _ in self.sparse]
        empty = torch.empty(0, dtype=torch.int64, device=params[0].device)
        indices, values = [], []
        for p in params:
            if p.grad is None:
                indices.append(empty)
                values.append(p.new_zeros((0, p.shape[1])))
                continue
            if not p.grad.is_sparse:
                raise RuntimeError("a dense gradient on a parameter declared sparse")
            g = p.grad.coalesce()
            indices.append(g.indices()[0])
            values.append(g.values())
        payload = pack_rows(indices, values, [k for _, k in self.sparse], params[0].shape[1])
        gathered = payload.new_empty((world.size * payload.shape[0], payload.shape[1]))
        _all_gather_single(gathered, payload)
        for t, p in enumerate(params):
            rows, vals = unpack_rows(gathered, t)
            p.grad = torch.sparse_coo_tensor(
                rows[None, :], vals / world.size, p.shape, dtype=p.dtype, check_invariants=False
            ).coalesce()


def _all_gather_single(out: Tensor, tensor: Tensor) -> None:
    """The ranks' `tensor`s concatenated along dim 0 into `out` (torch >= 2.10 calls it
    all_gather_single; all_gather_into_tensor before)."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, tensor)


def pack_rows(
    indices: Sequence[Tensor], values: Sequence[Tensor], bounds: Sequence[int], width: int
) -> Tensor:
    """The rows of several sparse gradients in one float32 buffer (sum(bounds), width + 2).

    Record j: ``values`` (width,), then the row index and the table number, both int32
    reinterpreted as float32 (bit-exact; row -1 marks padding). indices[t]: (k_t,) int64,
    k_t <= bounds[t]; values[t]: (k_t, width) float32.
    """
    dev = values[0].device
    out = torch.zeros((sum(bounds), width + 2), dtype=torch.float32, device=dev)
    tags = out[:, width:].view(torch.int32)  # (rows, 2) int32 view of the last two columns
    tags[:, 0] = -1
    start = 0
    for t, (rows, vals, bound) in enumerate(zip(indices, values, bounds, strict=True)):
        k = rows.numel()
        if k > bound:
            raise RuntimeError(f"a step touched {k} rows of table {t}, over its bound {bound}")
        if rows.numel() and int(rows.max()) >= 2**31:
            raise RuntimeError("tables over 2**31 rows are not supported")
        out[start : start + k, :width] = vals
        tags[start : start + k, 0] = rows.to(torch.int32)
        tags[start : start + k, 1] = t
        start += bound
    return out


def unpack_rows(gathered: Tensor, table: int) -> tuple[Tensor, Tensor]:
    """The (rows (k,) int64, values (k, width)) of `table` in the ranks' pack_rows buffers
    concatenated, (ranks * R, width + 2) (repeated rows are summed by coalesce)."""
    flat = gathered
    width = flat.shape[1] - 2
    tags = flat[:, width:].contiguous().view(torch.int32)
    keep = (tags[:, 0] >= 0) & (tags[:, 1] == table)
    return tags[keep, 0].to(torch.int64), flat[keep, :width]


# ----------------------------------------------------------------------------- evaluation


def shard_rows(matrix: sp.csr_matrix, world: World) -> sp.csr_matrix:
    """`matrix` with only this rank's rows kept (rows r, r + W, r + 2W, ...), the rest empty:
    each rank evaluates the users of its shard (users without test items are skipped)."""
    if not world.parallel:
        return matrix
    keep = np.zeros(matrix.shape[0], dtype=np.float32)
    keep[world.rank :: world.size] = 1.0
    out = sp.csr_matrix(sp.diags(keep) @ matrix)
    out.eliminate_zeros()
    return out


def combine_metrics(
    local: dict[str, float], world: World, device: torch.device
) -> dict[str, float]:
    """The metrics over all users from each rank's means over its shard (weighted by its
    ``n_users``): what one process evaluating every user would report."""
    if not world.parallel:
        return local
    names = [k for k in local if k != "n_users"]
    n = float(local.get("n_users", 0))
    sums = sum_scalars([n, *(local[k] * n for k in names)], world, device)
    total = sums[0]
    out = {k: (s / total if total else 0.0) for k, s in zip(names, sums[1:], strict=True)}
    out["n_users"] = int(total)
    return out
