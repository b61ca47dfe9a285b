"""One claimed job's run: train (in this process or in data-parallel ranks: the evaluation run
on the split, then the refit on every pair, trainer.refit), apply the quality gate to the
evaluation run, publish the refit; the job always ends in a final state (unless its process
is killed)."""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import layout
from contract.artifact import ArtifactInvalid, ModelNotFound, ModelRegistry
from contract.config import TrainConfig
from contract.jobspec import PROCESSES_KEY, job_refit
from store.jobs import Job, JobStore
from trainer.gate import decide
from worker.heartbeat import Heartbeat
from worker.jobconfig import job_train_config
from worker.settings import WorkerSettings
from worker.trainset import training_set

if TYPE_CHECKING:
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
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.train import TrainingCancelled

    beat = Heartbeat(store, job.id, worker_id, settings.heartbeat_interval_s, parent_pid)
    beat.start()
    try:
        cfg = job_train_config(job, settings.device, settings.dataset)
        beat.progress = {"stage": "loading data"}
        ds, snapshot = training_set(settings, job)
        # which ingested rows this model includes: those with seq <= max_seq
        ingested = {"rows": len(snapshot.rows), "max_seq": snapshot.max_seq}

        def on_epoch(info: dict[str, Any]) -> None:
            beat.progress = {"stage": "training", **info}
            store.heartbeat(job.id, worker_id, beat.progress)

        processes = int(job.params.get(PROCESSES_KEY) or settings.train_processes)
        fitted = evaluate_then_refit(
            ds,
            cfg,
            lambda d, c: _train(settings, store, job, d, c, processes, on_epoch),
            refit=job_refit(job.params, settings.refit),
        )
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
        )
        outcome: dict[str, Any] = {
            "metrics": result.metrics,
            "gate": gate.to_dict(),
            "ingested": ingested,
            "trained_on": fitted.trained_on.to_dict(),
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
        version = publish_fitted(
            fitted, ds, cfg, registry, keep=settings.keep_versions, extra={"ingested": ingested}
        )
        outcome["model_version"] = version
        outcome["forced"] = bool(not gate.passed and job.params.get("force"))
        store.finish(job.id, worker_id, "succeeded", result=outcome)
        log.info("job %s published %s", job.id, version)
    except TrainingCancelled:
        store.finish(job.id, worker_id, "cancelled", error="cancelled on request")
    except Exception as e:  # the job fails, the worker lives on
        log.error("job %s failed: %s\n%s", job.id, e, traceback.format_exc())
        store.finish(job.id, worker_id, "failed", error=f"{type(e).__name__}: {e}")
    finally:
        beat.stop()


def job_workdir(settings: WorkerSettings, job_id: str) -> Path:
    """Where a data-parallel job's ranks exchange files (worker.ranks)."""
    return settings.home / "tmp" / f"job-{job_id}"


def _train(
    settings: WorkerSettings,
    store: JobStore,
    job: Job,
    ds: Dataset,
    cfg: TrainConfig,
    processes: int,
    on_epoch: Callable[[dict[str, Any]], None],
) -> Any:
    """fit() in this process, or in `processes` torchrun ranks (worker.ranks) whose work
    directory ``<home>/tmp/job-<id>`` is removed afterwards (the ranks' output of a failed
    run is kept as ``<home>/logs/job-<id>-ranks.log``)."""

    def should_stop() -> bool:
        return store.cancel_requested(job.id)

    if processes == 1:
        from trainer.train import fit

        return fit(ds, cfg, progress=on_epoch, should_stop=should_stop)
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
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
