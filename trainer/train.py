"""The training loop: fit() a TrainConfig on a Dataset, publish_result() to a ModelRegistry
(trainer.refit runs the evaluation fit and the refit on every pair that is published).

One epoch = ``n_train // batch_size`` batches, ``sub_batches`` of them per optimiser step
(their losses summed; LightGCN propagates once per step); the sampler draws a whole epoch of
indices on the device at once and the loss is accumulated on the device, so a step does no
host round trip (one ``.item()`` per epoch). Evaluation (full ranking + embedding spectrum)
runs every ``eval_every`` epochs and after the last; with early stopping it runs on a
validation split carved from the training pairs and the test split is scored once, at the
end, with the best embeddings.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from contract.annindex import choose_index, sample_users, serialize_index, user_queries
from contract.artifact import ModelArrays, ModelRegistry
from contract.config import TrainConfig
from contract.manifest import IndexInfo, TrainedOn
from contract.settings import DEFAULT_INDEX_RECALL
from contract.spectrum import embedding_spectrum
from trainer.blend import blend_arrays, blend_metrics, choose_weight, embedding_config
from trainer.checkpoint import (
    CheckpointOptions,
    TrainState,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    to_cpu,
)
from trainer.data import Dataset, holdout_split
from trainer.device import pick_device
from trainer.distributed import (
    GradientAverager,
    World,
    any_rank,
    broadcast_parameters,
    combine_metrics,
    gather_objects,
    gather_strings,
    rank_device,
    rank_seed,
    shard_rows,
    sum_scalars,
)
from trainer.encoders import MF, Encoder, LightGCN
from trainer.evaluate import evaluate
from trainer.objectives import BatchLoss
from trainer.optim import RowAdam, build_optimizer
from trainer.sampling import CSR, PairSampler, UserItemSampler
from trainer.spectral import fit_filter, fit_spectral, spectral_arrays, spectral_embeddings
from trainer.toplists import with_embedding_lists

ProgressFn = Callable[[dict[str, Any]], None]
T = TypeVar("T")
B = TypeVar("B")


class TrainingCancelled(Exception):
    """should_stop() returned True; raised between epochs."""


class TrainingDiverged(RuntimeError):
    """The loss or the embeddings became NaN/inf; the message names the epoch."""


@dataclass
class TrainResult:
    """Outcome of fit(). Embeddings are the final (LightGCN: propagated) ones, float32."""

    user_emb: np.ndarray  # (m, d)
    item_emb: np.ndarray  # (n, d)
    history: list[dict[str, Any]]  # one entry per evaluation (see fit)
    metrics: dict[str, float]  # test metrics of the returned embeddings
    spectrum: dict[str, Any]  # embedding_spectrum of the returned embeddings (gate, manifest)
    seconds_per_epoch: float  # mean wall time of an epoch's training steps (no evaluation)
    device: str
    epochs_run: int = 0
    best_epoch: int | None = None  # early stopping: the epoch whose embeddings are returned
    stopped_early: bool = False
    resumed_from: int | None = None  # the checkpoint's epoch this run continued from
    extra: dict[str, Any] = field(default_factory=dict)


def spectrum_summary(spec: dict[str, Any]) -> dict[str, Any]:
    """Effective and stable ranks for users/items/all, raw and row-normalised (small dict),
    from a full ``embedding_spectrum``."""
    return {
        part: {
            kind: {
                "effective_rank": spec[part][kind]["effective_rank"],
                "stable_rank": spec[part][kind]["stable_rank"],
            }
            for kind in ("raw", "normalized")
        }
        for part in ("users", "items", "all")
    }


def build_encoder(
    cfg: TrainConfig, train: sp.csr_matrix, device: torch.device, generator: torch.Generator
) -> MF | LightGCN:
    """The encoder for cfg (initialised from `generator`, a CPU generator) on `device`."""
    m, n = train.shape
    if cfg.encoder == "mf":
        # With plain SGD and no weight decay, updating only the batch's rows is exactly the
        # dense update (the other rows' gradient is zero), and much cheaper; sparse_adam is
        # defined on the batch's rows.
        sparse = cfg.optimizer == "sparse_adam" or (
            cfg.optimizer == "sgd" and cfg.weight_decay == 0
        )
        enc = MF(m, n, cfg.dim, sparse=sparse, init=cfg.init, std=cfg.init_std, generator=generator)
        return enc.to(device)
    return LightGCN(
        train,
        cfg.dim,
        n_layers=cfg.n_layers,
        init=cfg.init,
        std=cfg.init_std,
        device=device,
        generator=generator,
    )


def _final_numpy(encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        u, i = encoder.final()
        return (
            u.detach().to("cpu", torch.float32).numpy().copy(),
            i.detach().to("cpu", torch.float32).numpy().copy(),
        )


def _evaluate(
    u: torch.Tensor,
    i: torch.Tensor,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    cfg: TrainConfig,
    world: World,
) -> dict[str, float]:
    """Full-ranking metrics of (u, i) over all test users; with several ranks each ranks its
    shard of the users and the means are combined."""
    with torch.no_grad():
        local = evaluate(
            u,
            i,
            train,
            shard_rows(test, world),
            ks=cfg.ks,
            recall_convention=cfg.recall_convention,
        )
    return combine_metrics(local, world, u.device)


def groups(items: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    """Consecutive tuples of `size` items (the last may be shorter)."""
    it = iter(items)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def row_catch_up(
    optimizer: torch.optim.Optimizer, encoder: Encoder
) -> Callable[[tuple[tuple[torch.Tensor, ...], ...]], None] | None:
    """For RowAdam on MF: a hook that brings a group of batches' rows up to date before
    their forward pass (users: batch[0], items: batch[1:]); None for other optimisers."""
    if not isinstance(optimizer, RowAdam):
        return None
    assert isinstance(encoder, MF)
    user, item = encoder.user.weight, encoder.item.weight

    def hook(group: tuple[tuple[torch.Tensor, ...], ...]) -> None:
        optimizer.bring_up_to_date(user, torch.cat([b[0] for b in group]))
        optimizer.bring_up_to_date(item, torch.cat([t for b in group for t in b[1:]]))

    return hook


def train_step(
    batch_loss: Callable[[B], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batch: B,
    before: Callable[[B], None] | None = None,
    after_backward: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One optimiser step on one batch (or group of batches, for a loss that sums them);
    `before(batch)` runs first (row_catch_up), `after_backward()` between the backward pass
    and the step (GradientAverager). Returns the loss (detached, on the device)."""
    if before is not None:
        before(batch)
    loss = batch_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return loss.detach()


def fit(
    ds: Dataset,
    cfg: TrainConfig,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_bar: bool | None = None,
    world: World | None = None,
    checkpoint: CheckpointOptions | None = None,
) -> TrainResult:
    """Train `cfg` on `ds`; return final embeddings, evaluation history and test metrics.

    world: this process's rank in a data-parallel run (trainer.distributed.init_world; None:
    one process). Every rank calls fit with the same data and config; each draws its own
    batches, an epoch has ``n_train // (B * S * world size)`` steps per rank, gradients are
    averaged (the lr is scaled by ``cfg.world_lr_scaling``), evaluation is sharded by users,
    and every rank returns the same result. should_stop() on any rank stops all of them.

    progress(info) is called after every epoch with {"epoch", "epochs", "loss", "metrics"
    (last evaluation's, {} before the first), "seconds" (that epoch's training time)}.
    should_stop() is polled before every epoch; True raises TrainingCancelled. progress_bar:
    tqdm bar on stderr (None: only when stderr is a terminal).

    History entries: {"epoch", "loss", "metrics", "spectrum" (see spectrum_summary),
    "seconds" (cumulative training time), "split" ("test" or "validation")}. The result's
    ``spectrum`` is the full ``embedding_spectrum`` of the returned embeddings, computed once,
    at the evaluation that produced them: the gate and publish_result use it as it is.

    checkpoint: write a checkpoint (trainer.checkpoint) every ``checkpoint.every`` epochs
    (rank 0 writes, with every rank's generators) and, with ``checkpoint.resume``, start from
    the latest one in ``checkpoint.directory`` when there is one: the result then equals the
    uninterrupted run's (CheckpointMismatch when the checkpoint's config, dataset or number
    of ranks differ). progress() is called for the epochs run after it only.
    """
    world = world or World.single()
    if cfg.objective == "spectral":
        return _fit_spectral(ds, cfg, progress)
    if cfg.objective == "blend":
        return _fit_blend(ds, cfg, progress, should_stop, progress_bar, world, checkpoint)
    device = rank_device(pick_device(cfg.device), world)
    old_threads = torch.get_num_threads()
    # auto (0) = 1 thread on CPU: MF's kernels (B x B x d) are too small to gain from
    # intra-op threads; LightGCN's propagation gains ~1.8x from 2 threads on an idle 2-core
    # machine (Gowalla: 31.9 vs 56.2 s/epoch) but OpenMP threads slow down 8-50x when the
    # cores are shared (452 vs 57 s/epoch beside one busy process; docs/benchmarks.md), which
    # is the worker's normal case beside the API. num_threads > 0 opts in.
    torch.set_num_threads(cfg.num_threads or (1 if device.type == "cpu" else old_threads))
    try:
        return _fit(ds, cfg, device, world, progress, should_stop, progress_bar, checkpoint)
    finally:
        torch.set_num_threads(old_threads)


def _fit(
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    world: World,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    progress_bar: bool | None,
    checkpoint: CheckpointOptions | None,
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    init_gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed + 1, world.rank))

    early = cfg.early_stop_patience > 0
    fit_ds = holdout_split(ds, cfg.val_fraction, cfg.seed) if early else ds
    train = fit_ds.train_matrix()
    eval_test = fit_ds.test_matrix()  # validation pairs when early stopping, else test
    if train.nnz == 0:
        raise ValueError(f"dataset {ds.name!r} has no training interactions")

    encoder = build_encoder(cfg, train, device, init_gen)
    broadcast_parameters(encoder.parameters(), world)
    lr_scale = world.size if cfg.world_lr_scaling == "linear" else 1.0
    optimizer = build_optimizer(cfg, encoder, lr_scale=lr_scale)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    user_graph = CSR(train, device)
    needs_items = cfg.adaptive_tau and cfg.objective == "directspec+"
    item_graph = CSR(train.T.tocsr(), device) if needs_items else None
    if cfg.sampler == "user":
        sampler: UserItemSampler | PairSampler = UserItemSampler(
            user_graph, cfg.batch_size, sample_gen, world_size=world.size
        )
    else:
        sampler = PairSampler(
            user_graph,
            cfg.batch_size,
            sample_gen,
            negatives=cfg.objective == "bpr",
            world_size=world.size,
        )
    batch_loss = BatchLoss(cfg, encoder, user_graph, item_graph)
    catch_up = row_catch_up(optimizer, encoder)
    average = _gradient_averager(cfg, encoder, world)

    history: list[dict[str, Any]] = []
    last_metrics: dict[str, float] = {}
    train_seconds = 0.0
    # embeddings of the last evaluation (the final ones without early stopping) and of the
    # best one, each with its spectrum: computed once per evaluation, reused by the result
    last: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None = None
    best: tuple[float, int, np.ndarray, np.ndarray, dict[str, Any]] | None = None
    evals_since_best = 0
    stopped_early = False
    epoch = 0
    fingerprint = ds.fingerprint() if checkpoint is not None else ""
    resumed = _resume(checkpoint, cfg, fingerprint, world)
    if resumed is not None:
        encoder.load_state_dict(resumed.encoder)
        optimizer.load_state_dict(resumed.optimizer)
        scheduler.load_state_dict(resumed.scheduler)
        _set_rng_states(resumed.rng[world.rank], sample_gen, device)
        epoch = resumed.epoch
        p, arrays = resumed.progress, resumed.arrays
        history, last_metrics = p["history"], p["last_metrics"]
        train_seconds, evals_since_best = p["train_seconds"], p["evals_since_best"]
        stopped_early = p["stopped_early"]
        if p["last_spectrum"] is not None:
            last = (arrays["last_user"].numpy(), arrays["last_item"].numpy(), p["last_spectrum"])
        if p["best"] is not None:
            score, best_at, spec = p["best"]
            best = (score, best_at, arrays["best_user"].numpy(), arrays["best_item"].numpy(), spec)
    bar = _progress_bar(cfg.epochs, progress_bar)
    if bar is not None and epoch:
        bar.update(epoch)
    start, end = epoch + 1, epoch if stopped_early else cfg.epochs  # resumed: may be empty
    encoder.train()
    try:
        for epoch in range(start, end + 1):
            stop = should_stop is not None and should_stop()
            if any_rank(stop, world, device):
                raise TrainingCancelled(f"cancelled before epoch {epoch}")
            t0 = time.perf_counter()
            total = torch.zeros((), device=device)
            for group in groups(sampler.epoch(), cfg.sub_batches):
                total += train_step(batch_loss.summed, optimizer, group, catch_up, average)
            # per batch, over all ranks; one host sync
            loss_sum, n_batches = sum_scalars(
                [total.item(), sampler.steps_per_epoch], world, device
            )
            mean_loss = loss_sum / n_batches
            scheduler.step()
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}: mean loss {mean_loss} "
                    f"(objective {cfg.objective}, lr {cfg.lr}); try a smaller lr"
                )

            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                if isinstance(optimizer, RowAdam):
                    optimizer.flush()  # the deferred steps, before the tables are read
                u_np, i_np = _final_numpy(encoder)
                if not (np.isfinite(u_np).all() and np.isfinite(i_np).all()):
                    raise TrainingDiverged(f"embeddings became NaN/inf at epoch {epoch}")
                with torch.no_grad():
                    u_t, i_t = encoder.final()
                    last_metrics = _evaluate(u_t, i_t, train, eval_test, cfg, world)
                spec = embedding_spectrum(u_np, i_np)
                last = (u_np, i_np, spec)
                history.append(
                    {
                        "epoch": epoch,
                        "loss": mean_loss,
                        "metrics": last_metrics,
                        "spectrum": spectrum_summary(spec),
                        "seconds": train_seconds,
                        "split": "validation" if early else "test",
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                )
                if early:
                    score = last_metrics[cfg.early_stop_metric]
                    if best is None or score > best[0] + cfg.early_stop_min_delta:
                        best, evals_since_best = (score, epoch, u_np, i_np, spec), 0
                    else:
                        evals_since_best += 1
                        if evals_since_best >= cfg.early_stop_patience:
                            stopped_early = True

            info = {
                "epoch": epoch,
                "epochs": cfg.epochs,
                "loss": mean_loss,
                "metrics": last_metrics,
                "seconds": seconds,
            }
            if checkpoint is not None and checkpoint.every and epoch % checkpoint.every == 0:
                # every rank's generators (each draws its own batches); rank 0 writes
                rngs = gather_objects(_rng_states(sample_gen, device), world)
                if world.is_main:
                    state = TrainState(
                        epoch=epoch,
                        config=cfg.to_dict(),
                        dataset_fingerprint=fingerprint,
                        world_size=world.size,
                        encoder=to_cpu(encoder.state_dict()),
                        optimizer=to_cpu(optimizer.state_dict()),
                        scheduler=scheduler.state_dict(),
                        rng=rngs,
                        progress={
                            "history": history,
                            "last_metrics": last_metrics,
                            "train_seconds": train_seconds,
                            "evals_since_best": evals_since_best,
                            "stopped_early": stopped_early,
                            "last_spectrum": last[2] if last is not None else None,
                            "best": best[:2] + best[4:] if best is not None else None,
                        },
                        arrays=_kept_arrays(last, best),
                    )
                    save_checkpoint(state, checkpoint.directory, checkpoint.keep)
            if bar is not None:
                bar.set_postfix(_postfix(mean_loss, last_metrics, cfg), refresh=False)
                bar.update(1)
            if progress is not None:
                progress(info)
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()

    assert last is not None  # an evaluation always runs at the last epoch
    if early:
        assert best is not None
        _, best_epoch, u_np, i_np, spec = best
        metrics = _evaluate(
            torch.from_numpy(u_np),
            torch.from_numpy(i_np),
            ds.train_matrix(),
            ds.test_matrix(),
            cfg,
            world,
        )
    else:
        best_epoch = None
        u_np, i_np, spec = last  # no step since the last evaluation: the final embeddings
        metrics = last_metrics
    return TrainResult(
        user_emb=u_np,
        item_emb=i_np,
        history=history,
        metrics=metrics,
        spectrum=spec,
        seconds_per_epoch=train_seconds / max(epoch, 1),
        device=str(device),
        epochs_run=epoch,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        resumed_from=resumed.epoch if resumed is not None else None,
        extra={
            "distributed": {
                "world_size": world.size,
                "backend": world.backend,
                "devices": gather_strings(str(device), world),
            }
        },
    )


def _resume(
    checkpoint: CheckpointOptions | None, cfg: TrainConfig, fingerprint: str, world: World
) -> TrainState | None:
    """The latest checkpoint to resume from (None: none asked for, or none written yet);
    CheckpointMismatch when it belongs to another run."""
    if checkpoint is None or not checkpoint.resume:
        return None
    path = latest_checkpoint(checkpoint.directory)
    if path is None:
        return None
    state = load_checkpoint(path)
    check_compatible(state, cfg.to_dict(), fingerprint, world.size)
    return state


def _rng_states(sample_gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's generator states: the sampler's, torch's global CPU one and, on CUDA,
    the device's. (Training draws from no numpy or Python generator: the validation split
    is seeded by cfg.seed.)"""
    states = {"sample": sample_gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(
    states: dict[str, torch.Tensor], sample_gen: torch.Generator, device: torch.device
) -> None:
    sample_gen.set_state(states["sample"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def _kept_arrays(
    last: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None,
    best: tuple[float, int, np.ndarray, np.ndarray, dict[str, Any]] | None,
) -> dict[str, torch.Tensor]:
    """The embeddings of the last and the best evaluation, as CPU tensors (copies)."""
    out = {}
    if last is not None:
        out["last_user"], out["last_item"] = (torch.from_numpy(a.copy()) for a in last[:2])
    if best is not None:
        out["best_user"], out["best_item"] = (torch.from_numpy(a.copy()) for a in best[2:4])
    return out


def _fit_spectral(ds: Dataset, cfg: TrainConfig, progress: ProgressFn | None) -> TrainResult:
    """The training-free filter as a TrainResult: the low-pass part as embeddings (users @
    items.T is its score) and the whole filter in ``extra["filter"]`` (publish_result)."""
    filt, summary = fit_spectral(ds, cfg)
    train = ds.train_matrix()
    users, items = spectral_embeddings(filt, train)
    spec = embedding_spectrum(users, items)
    metrics = summary["metrics"]
    seconds = summary["seconds_fit"]
    entry = {
        "epoch": 1,
        "loss": 0.0,
        "metrics": metrics,
        "spectrum": spectrum_summary(spec),
        "seconds": seconds,
        "split": "test",
    }
    if progress is not None:
        progress({"epoch": 1, "epochs": 1, "loss": 0.0, "metrics": metrics, "seconds": seconds})
    return TrainResult(
        user_emb=users,
        item_emb=items,
        history=[entry],
        metrics=metrics,
        spectrum=spec,
        seconds_per_epoch=seconds,
        device="cpu",
        epochs_run=1,
        extra={"filter": filt, "seconds_eval": summary["seconds_eval"]},
    )


def _fit_blend(
    ds: Dataset,
    cfg: TrainConfig,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    progress_bar: bool | None,
    world: World,
    checkpoint: CheckpointOptions | None,
) -> TrainResult:
    """DirectSpec+ (``trainer.blend.embedding_config``) and the filter on ds's training
    pairs, scored on the test split by their blend (contract/blend.py) with
    ``cfg.blend_weight``, or with the weight chosen on a validation split carved from the
    training pairs when it is None (``trainer.blend.choose_weight``: both parts fitted there
    first). The result carries DirectSpec+'s embeddings and history (entries marked
    ``"model": "directspec+"``, then one ``"blend"`` entry with the blend's metrics), the
    filter in ``extra["filter"]`` and the weight in ``extra["blend_weight"]``."""
    choice = None
    weight = cfg.blend_weight
    if weight is None:

        def on_validation(info: dict[str, Any]) -> None:
            if progress is not None:
                progress({**info, "selecting": "blend weight"})

        choice = choose_weight(
            ds,
            cfg,
            lambda d, c: fit(
                d,
                c,
                progress=on_validation,
                should_stop=should_stop,
                progress_bar=False,
                world=world,
            ),
        )
        weight = choice.weight
    emb = fit(
        ds,
        embedding_config(cfg),
        progress=progress,
        should_stop=should_stop,
        progress_bar=progress_bar,
        world=world,
        checkpoint=checkpoint,
    )
    t0 = time.perf_counter()
    train, test = ds.train_matrix(), ds.test_matrix()
    filt = fit_filter(train, cfg.spectral_k, cfg.spectral_alpha, cfg.seed, cfg.spectral_solver)
    t1 = time.perf_counter()
    metrics: dict[str, float] = {}
    if test.nnz:
        found = blend_metrics(
            filt,
            train,
            emb.user_emb,
            emb.item_emb,
            test,
            [weight],
            ks=cfg.ks,
            recall_convention=cfg.recall_convention,
            threads=cfg.num_threads or 2,
        )
        metrics = dict(found[float(weight)])
    t2 = time.perf_counter()
    seconds = (emb.history[-1]["seconds"] if emb.history else 0.0) + (t1 - t0)
    history = [{**entry, "model": "directspec+"} for entry in emb.history]
    history.append(
        {
            "epoch": emb.epochs_run,
            "loss": emb.history[-1]["loss"] if emb.history else 0.0,
            "metrics": metrics,
            "spectrum": spectrum_summary(emb.spectrum),
            "seconds": seconds,
            "split": "test",
            "model": "blend",
        }
    )
    return dataclasses.replace(
        emb,
        history=history,
        metrics=metrics,
        extra={
            **emb.extra,
            "filter": filt,
            "blend_weight": float(weight),
            "blend_selection": choice.to_dict() if choice is not None else None,
            "seconds_filter_fit": t1 - t0,
            "seconds_eval": t2 - t1,
        },
    )


def _gradient_averager(cfg: TrainConfig, encoder: Encoder, world: World) -> GradientAverager | None:
    """Averages gradients across ranks after each backward pass (None for one process).
    MF's sparse row gradients carry at most B x S users and B x S (BPR: 2 B x S) items."""
    if not world.parallel:
        return None
    rows = cfg.batch_size * cfg.sub_batches
    item_rows = rows * (2 if cfg.objective == "bpr" else 1)
    params = list(encoder.parameters())
    if isinstance(encoder, MF) and encoder.user.sparse:
        return GradientAverager(params, world, [rows, item_rows])
    return GradientAverager(params, world, [0] * len(params))  # dense: all_reduce


def _postfix(loss: float, metrics: dict[str, float], cfg: TrainConfig) -> dict[str, str]:
    out = {"loss": f"{loss:.4f}"}
    k = max(cfg.ks)
    if metrics:
        out[f"R@{k}"] = f"{metrics[f'recall@{k}']:.4f}"
        out[f"N@{k}"] = f"{metrics[f'ndcg@{k}']:.4f}"
    return out


def _progress_bar(total: int, enabled: bool | None) -> tqdm | None:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None

    return tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True)


def with_item_index(arrays: ModelArrays, target: float) -> tuple[ModelArrays, IndexInfo]:
    """An embedding model's arrays with its item index (none when exact search wins) and the
    choice (contract.annindex), measured on the vectors of a seeded sample of users, each
    search excluding that user's seen items as the service's do."""
    rows = sample_users(arrays.n_users)
    queries = user_queries(arrays.user_emb, rows)
    choice = choose_index(arrays.item_emb, queries, target, [arrays.seen(r) for r in rows])
    if choice.index is not None:
        arrays = arrays.with_arrays(item_index=serialize_index(choice.index))
    return arrays, choice.info


def publish_result(
    result: TrainResult,
    ds: Dataset,
    cfg: TrainConfig,
    registry: ModelRegistry,
    *,
    keep: int = 5,
    activate: bool = True,
    extra: dict[str, Any] | None = None,
    evaluation: TrainResult | None = None,
    trained_on: TrainedOn | None = None,
    index_recall: float = DEFAULT_INDEX_RECALL,
) -> str:
    """Write the trained model (``result``'s embeddings) as a new registry version; return
    the version name.

    The seen set is every pair of ``ds``, train and test (contract.artifact). ``evaluation``:
    the run on ``ds``'s split whose metrics and history the manifest keeps, when ``result`` is
    a refit on every pair (trainer.refit; None: ``result`` is that run itself).
    ``trained_on``: which pairs ``result`` was fitted on (None: ``ds``'s training pairs).

    The manifest carries the config, the evaluation's test metrics, the full spectrum of the
    published embeddings (``result.spectrum``, as fit computed it), the dataset fingerprint,
    ``trained_on``, under "training" the evaluation history, seconds per epoch, device and
    epochs run (and under "training.refit" the refit's), and the top-level entries of
    ``extra`` (e.g. the worker's "ingested").

    An embedding model also gets its item index, chosen on held-out user vectors for
    ``index_recall`` (0: none chosen) by contract.annindex: the manifest's "index" records
    the choice, the artifact ships the index unless it is exact search.
    """
    evaluated = evaluation or result
    if trained_on is None:
        trained_on = TrainedOn.counted(
            "train", ds.n_train, result.epochs_run, ds.n_train, ds.n_test
        )
    arrays = ModelArrays.build(
        result.user_emb,
        result.item_emb,
        ds.user_ids,
        ds.item_ids,
        (
            np.concatenate([ds.train_users, ds.test_users]),
            np.concatenate([ds.train_items, ds.test_items]),
        ),
    )
    training: dict[str, Any] = {
        "history": evaluated.history,
        "seconds_per_epoch": evaluated.seconds_per_epoch,
        "device": evaluated.device,
        "epochs_run": evaluated.epochs_run,
        "best_epoch": evaluated.best_epoch,
        "stopped_early": evaluated.stopped_early,
        "resumed_from": evaluated.resumed_from,
        "torch_version": torch.__version__,
        # world_size, backend, devices (train.fit)
        "distributed": evaluated.extra.get("distributed"),
    }
    if evaluated is not result:
        training["refit"] = {
            "seconds_per_epoch": result.seconds_per_epoch,
            "device": result.device,
            "epochs_run": result.epochs_run,
        }
    model: dict[str, Any] = {"kind": "embedding"}
    filt = result.extra.get("filter")
    weight = result.extra.get("blend_weight")
    if filt is not None and weight is not None:
        arrays = blend_arrays(arrays, filt, weight)
        model = {
            "kind": "blend",
            "spectral_k": filt.rank,
            "spectral_alpha": filt.alpha,
            "blend_weight": weight,
            "blend_selection": evaluated.extra.get("blend_selection"),
            "top_k": int(arrays.top_rows.shape[1]) if arrays.top_rows is not None else 0,
        }
    elif filt is not None:
        arrays = spectral_arrays(arrays, filt, cfg)
        model = {
            "kind": "spectral",
            "spectral_k": filt.rank,
            "spectral_alpha": filt.alpha,
            "top_k": int(arrays.top_rows.shape[1]) if arrays.top_rows is not None else 0,
        }
    else:  # each user's top list, so that no service process computes them (trainer.toplists)
        arrays = with_embedding_lists(arrays)
        if arrays.top_rows is not None:
            model["top_k"] = int(arrays.top_rows.shape[1])
        if index_recall > 0:
            arrays, info = with_item_index(arrays, index_recall)
            extra = {**(extra or {}), "index": info.to_dict()}
    return registry.publish(
        arrays,
        config=cfg.to_dict(),
        metrics=dict(evaluated.metrics),
        spectrum=result.spectrum,
        dataset_fingerprint=ds.fingerprint(),
        extra={
            "dataset": ds.name,
            "trained_on": trained_on.to_dict(),
            "training": training,
            "model": model,
            **(extra or {}),
        },
        keep=keep,
        activate=activate,
    )
