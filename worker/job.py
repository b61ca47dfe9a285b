"""One claimed job's run: train (in this process or in data-parallel ranks: the evaluation run
on the split, then the refit on every pair, trainer.refit), apply the quality gate to the
evaluation run, publish the refit; the job always ends in a final state (unless its process
is killed), or, when a training process died and attempts are left, goes back to the queue.

Work directory ``<home>/tmp/job-<id>`` (never published): the ranks' files (worker.ranks) and
``checkpoints/``: the evaluation run's training checkpoints (trainer.checkpoint; the refit's
in ``checkpoints/refit/``) and ``trainset.json``, the first attempt's ingested-rows
high-water mark and number of processes, so that a retried attempt trains on the same rows in
as many ranks and resumes from the latest checkpoint. The directory is removed when the job
ends.
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import layout
from contract.artifact import ArtifactInvalid, ModelNotFound, ModelRegistry
from contract.config import TrainConfig
from contract.jobspec import PROCESSES_KEY, job_refit
from store.jobs import Job, JobStore
from trainer.gate import decide
from worker.heartbeat import Heartbeat
from worker.jobconfig import auto_candidates, is_auto, job_train_config
from worker.settings import WorkerSettings
from worker.trainset import training_set

if TYPE_CHECKING:
    from trainer.checkpoint import CheckpointOptions
    from trainer.data import Dataset

log = logging.getLogger("specrec.worker")


def run_job(
    settings: WorkerSettings,
    store: JobStore,
    job: Job,
    worker_id: str,
    parent_pid: int | None = None,
) -> None:
    """Train, gate, publish; always leaves the job in a final state (unless we are killed)."""
    from trainer.checkpoint import CheckpointOptions, list_checkpoints
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.train import TrainingCancelled
    from worker.ranks import RanksFailed

    beat = Heartbeat(store, job.id, worker_id, settings.heartbeat_interval_s, parent_pid)
    beat.start()
    requeued = False
    try:
        cfg = job_train_config(job, settings.device, settings.dataset)
        beat.progress = {"stage": "loading data"}
        checkpoint = None
        if settings.checkpoint_every:
            checkpoint = CheckpointOptions(
                checkpoint_dir(settings, job.id), settings.checkpoint_every, resume=True
            )
        processes = int(job.params.get(PROCESSES_KEY) or settings.train_processes)
        pinned = _pinned(checkpoint.directory) if checkpoint else None
        if pinned is not None:  # a retry: the first attempt's rows and world size
            processes = pinned.processes
        upto_seq = pinned.max_seq if pinned is not None else None
        ds, snapshot = training_set(settings, job, upto_seq=upto_seq)
        if checkpoint is not None and pinned is None:
            _pin(checkpoint.directory, _Pinned(snapshot.max_seq, processes))
        # which ingested rows this model includes: those with seq <= max_seq
        ingested = {"rows": len(snapshot.rows), "max_seq": snapshot.max_seq}
        found = list_checkpoints(checkpoint.directory) if checkpoint else []
        resumed_from = found[-1][0] if found else None
        store.record_resume(job.id, worker_id, resumed_from)
        if resumed_from is not None:
            log.info("job %s: resuming from the epoch-%d checkpoint", job.id, resumed_from)

        def on_epoch(info: dict[str, Any], stage: str = "training") -> None:
            beat.progress = {"stage": stage, **info}
            store.heartbeat(job.id, worker_id, beat.progress)

        def on_refit_epoch(info: dict[str, Any]) -> None:
            on_epoch(info, "refit on every pair")

        selection = None
        if is_auto(job):
            from trainer.select import select_by_validation

            beat.progress = {"stage": "choosing by validation"}
            selection = select_by_validation(
                ds,
                auto_candidates(job, settings.device, settings.dataset),
                progress=on_epoch,
                should_stop=lambda: store.cancel_requested(job.id),
            )
            cfg = selection.winner
            log.info("job %s: %s", job.id, selection.reason)
        if cfg.objective in ("spectral", "blend"):
            # spectral: one SVD and sparse products, nothing to parallelise; blend: its filter
            # part and its evaluation are not sharded across ranks, so it trains in one process
            processes = 1

        def run(d: Dataset, c: TrainConfig) -> Any:
            """One run; the refit on every pair checkpoints into ``checkpoints/refit``."""
            where = checkpoint
            if checkpoint is not None and d is not ds:
                where = CheckpointOptions(
                    checkpoint.directory / "refit", checkpoint.every, resume=True
                )
            progress = on_epoch if d is ds else on_refit_epoch
            return _train(settings, store, job, d, c, processes, progress, where)

        fitted = evaluate_then_refit(ds, cfg, run, refit=job_refit(job.params, settings.refit))
        result = fitted.evaluation  # the gate compares the run on the split
        beat.progress = {**beat.progress, "stage": "quality gate"}
        registry = ModelRegistry(settings.registry_root)
        try:
            serving = registry.load()
        except (ModelNotFound, ArtifactInvalid):
            serving = None
        gate = decide(
            ds,
            result.user_emb,
            result.item_emb,
            serving,
            settings,
            recall_convention=cfg.recall_convention,
            spectrum=fitted.model.spectrum,  # collapse: of the embeddings to publish
            new_filter=result.extra.get("filter"),
            new_blend_weight=result.extra.get("blend_weight"),
        )
        outcome: dict[str, Any] = {
            "metrics": result.metrics,
            "gate": gate.to_dict(),
            "ingested": ingested,
            "trained_on": fitted.trained_on.to_dict(),
            "selection": selection.to_dict() if selection is not None else None,
        }
        if not gate.passed and not job.params.get("force"):
            store.finish(
                job.id,
                worker_id,
                "rejected",
                result=outcome,
                error="quality gate failed: " + "; ".join(gate.reasons),
            )
            log.warning("job %s rejected: %s", job.id, gate.reasons)
            return
        current = store.get(job.id)
        if current is None or current.state != "running":  # reaped or cancelled meanwhile
            return
        extra: dict[str, Any] = {"ingested": ingested}
        if selection is not None:
            extra["selection"] = selection.to_dict()
        version = publish_fitted(
            fitted, ds, cfg, registry, extra=extra, **settings.publish_options()
        )
        outcome["model_version"] = version
        outcome["forced"] = bool(not gate.passed and job.params.get("force"))
        store.finish(job.id, worker_id, "succeeded", result=outcome)
        log.info("job %s published %s", job.id, version)
    except TrainingCancelled:
        store.finish(job.id, worker_id, "cancelled", error="cancelled on request")
    except RanksFailed as e:  # a training process died: retried while attempts are left
        error = f"{type(e).__name__}: {e}"
        requeued = store.retry(job.id, worker_id, error)
        if requeued:
            log.warning("job %s: %s; queued again to resume from its checkpoint", job.id, e)
        else:
            log.error("job %s failed: %s", job.id, e)
            store.finish(job.id, worker_id, "failed", error=error)
    except Exception as e:  # the job fails, the worker lives on
        log.error("job %s failed: %s\n%s", job.id, e, traceback.format_exc())
        error = layout.public_text(f"{type(e).__name__}: {e}", settings.home)  # no server path
        store.finish(job.id, worker_id, "failed", error=error)
    finally:
        beat.stop()
        clear_workdir(settings, job.id, keep_checkpoints=requeued)


def job_workdir(settings: WorkerSettings, job_id: str) -> Path:
    """A job's work directory (see the module docstring)."""
    return settings.home / "tmp" / f"job-{job_id}"


def checkpoint_dir(settings: WorkerSettings, job_id: str) -> Path:
    """Where a job's training checkpoints live, across its attempts."""
    return job_workdir(settings, job_id) / "checkpoints"


def clear_workdir(settings: WorkerSettings, job_id: str, *, keep_checkpoints: bool) -> None:
    """Remove the job's work directory; with `keep_checkpoints`, all of it but checkpoints/
    (a job queued again)."""
    workdir = job_workdir(settings, job_id)
    if not keep_checkpoints:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for path in workdir.iterdir() if workdir.is_dir() else ():
        if path.name == "checkpoints":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


_TRAINSET = "trainset.json"


@dataclass(frozen=True)
class _Pinned:
    """What a job's first attempt trained with, which its checkpoints need again."""

    max_seq: int  # ingested rows up to this seq
    processes: int  # data-parallel world size (each rank's generator is in the checkpoint)


def _pinned(directory: Path) -> _Pinned | None:
    """The first attempt's _Pinned (None: this is the first attempt)."""
    try:
        return _Pinned(**json.loads((directory / _TRAINSET).read_text()))
    except FileNotFoundError:
        return None


def _pin(directory: Path, pinned: _Pinned) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _TRAINSET).write_text(json.dumps(asdict(pinned)))


def _train(
    settings: WorkerSettings,
    store: JobStore,
    job: Job,
    ds: Dataset,
    cfg: TrainConfig,
    processes: int,
    on_epoch: Callable[[dict[str, Any]], None],
    checkpoint: CheckpointOptions | None,
) -> Any:
    """fit() in this process, or in `processes` torchrun ranks (worker.ranks) whose files in
    the work directory ``<home>/tmp/job-<id>`` are removed afterwards (the ranks' output of a
    failed run is kept as ``<home>/logs/job-<id>-ranks.log``); both checkpoint into and resume
    from ``checkpoint``."""

    def should_stop() -> bool:
        return store.cancel_requested(job.id)

    if processes == 1:
        from trainer.train import fit

        return fit(ds, cfg, progress=on_epoch, should_stop=should_stop, checkpoint=checkpoint)
    from worker.ranks import run_ranks

    workdir = job_workdir(settings, job.id)
    log.info("job %s: training in %d data-parallel ranks (%s)", job.id, processes, workdir)
    try:
        return run_ranks(
            ds,
            cfg,
            processes,
            workdir,
            progress=on_epoch,
            should_stop=should_stop,
            timeout_s=settings.dist_timeout_s,
            poll_s=min(settings.poll_interval_s, 0.5),
            keep_log=layout.logs_dir(settings.home) / f"job-{job.id}-ranks.log",
            checkpoint=checkpoint,
        )
    finally:
        clear_workdir(settings, job.id, keep_checkpoints=True)
