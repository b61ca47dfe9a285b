"""The training worker (`specrec-worker`): bootstrap a default model, then run retrain jobs.

One process: claims a queued job atomically, sends heartbeats from a side thread, trains on a
snapshot of the dataset plus all ingested interactions, applies the quality gate and publishes.
The service hot-swaps to the new version by watching the registry's CURRENT pointer.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import threading
import traceback
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer import layout
from trainer.artifact import ArtifactInvalid, ModelNotFound, ModelRegistry
from trainer.feedback import FeedbackStore, write_snapshot
from trainer.gate import GateConfig, decide
from trainer.jobs import Job, JobStore
from trainer.jobspec import train_config_for_job

log = logging.getLogger("specrec.worker")


class WorkerSettings(layout.HomePaths, BaseSettings):
    """Worker configuration from SPECREC_* environment variables (names shared with the API)."""

    model_config = SettingsConfigDict(env_prefix="SPECREC_", extra="ignore")

    home: Path = Field(Path("var"), description="Root of data, models and queues.")
    models_dir: Path | None = Field(None, description="Model registry (default HOME/models).")
    dataset: str = Field("default", description="Dataset name under HOME/data used by jobs.")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Seconds between heartbeats.")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="A running job without a heartbeat this long is failed."
    )
    poll_interval_s: float = Field(1.0, gt=0, description="Seconds between queue polls.")
    keep_versions: int = Field(5, ge=1, description="Published versions kept on disk.")
    gate_max_recall_drop: float = Field(
        0.05, ge=0, le=1, description="Largest allowed relative Recall@20 drop vs serving."
    )
    gate_min_erank_ratio: float = Field(
        0.25, ge=0, le=1, description="Smallest allowed erank/d of the normalised embeddings."
    )
    device: str | None = Field(None, description="cpu, cuda, cuda:N; default: CUDA if present.")

    def dataset_dir(self, name: str) -> Path:
        return self.data_root / name


def ensure_default_dataset(settings: WorkerSettings) -> Path:
    from trainer.synthetic import write_dataset

    out = settings.dataset_dir("default")
    write_dataset(out)
    return out


def bootstrap(settings: WorkerSettings) -> str | None:
    """Generate the default dataset and train+publish a default model if none is published."""
    from trainer.config import default_synthetic_config
    from trainer.data import load_dataset
    from trainer.train import fit, publish_result

    data_dir = ensure_default_dataset(settings)
    registry = ModelRegistry(settings.registry_root)
    if registry.current() is not None:
        log.info("model %s is published; nothing to bootstrap", registry.current())
        return None
    cfg = default_synthetic_config()
    if settings.device:
        cfg = type(cfg).from_dict({**cfg.to_dict(), "device": settings.device})
    log.info("no model published yet: training the default model on %s", data_dir)
    ds = load_dataset(data_dir)
    result = fit(ds, cfg)
    version = publish_result(result, ds, cfg, registry, keep=settings.keep_versions)
    log.info("published default model %s (%s)", version, result.metrics)
    return version


class _Heartbeat(threading.Thread):
    """Sends heartbeats (with the latest progress) until stopped."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.store, self.job_id, self.worker_id, self.interval = store, job_id, worker_id, interval
        self.progress: dict[str, Any] = {"stage": "starting"}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.store.heartbeat(self.job_id, self.worker_id, self.progress)

    def stop(self) -> None:
        self._stop_event.set()


def _snapshot_dataset(settings: WorkerSettings, job: Job) -> Path:
    """The dataset path to train on: the named dataset, plus ingested rows when there are any."""
    from trainer.data import load_dataset

    name = job.params.get("dataset") or settings.dataset
    base = settings.dataset_dir(name)
    if name == "default":
        ensure_default_dataset(settings)
    if not base.exists():
        raise FileNotFoundError(f"dataset {name!r} not found at {base}")
    feedback = FeedbackStore(settings.feedback_db)
    if feedback.count() == 0:
        return base
    ds = load_dataset(base)
    users = list(ds.user_ids[ds.train_users]) + list(ds.user_ids[ds.test_users])
    items = list(ds.item_ids[ds.train_items]) + list(ds.item_ids[ds.test_items])
    out = layout.snapshot_csv(settings.home, job.id)
    n = write_snapshot(out, ((u, i, None) for u, i in zip(users, items, strict=True)), feedback)
    log.info("job %s: snapshot of %d interactions (%d ingested)", job.id, n, feedback.count())
    return out


def run_job(settings: WorkerSettings, store: JobStore, job: Job, worker_id: str) -> None:
    """Train, gate, publish; always leaves the job in a final state (unless we are killed)."""
    from trainer.data import load_dataset
    from trainer.train import TrainingCancelled, fit, publish_result

    beat = _Heartbeat(store, job.id, worker_id, settings.heartbeat_interval_s)
    beat.start()
    try:
        cfg = train_config_for_job(job.params, settings.device)
        beat.progress = {"stage": "loading data"}
        ds = load_dataset(_snapshot_dataset(settings, job))

        def on_epoch(info: dict[str, Any]) -> None:
            beat.progress = {"stage": "training", **info}
            store.heartbeat(job.id, worker_id, beat.progress)

        result = fit(ds, cfg, progress=on_epoch, should_stop=lambda: store.cancel_requested(job.id))
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
            GateConfig(
                max_relative_drop=settings.gate_max_recall_drop,
                min_erank_ratio=settings.gate_min_erank_ratio,
            ),
            recall_convention=cfg.recall_convention,
        )
        outcome: dict[str, Any] = {"metrics": result.metrics, "gate": gate.to_dict()}
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
        if store.get(job.id).state != "running":  # reaped or cancelled meanwhile
            return
        version = publish_result(result, ds, cfg, registry, keep=settings.keep_versions)
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
        # the snapshot is only this job's input; the manifest keeps its fingerprint
        shutil.rmtree(layout.snapshot_csv(settings.home, job.id).parent, ignore_errors=True)


def serve_forever(settings: WorkerSettings, stop: threading.Event) -> None:
    store = JobStore(settings.jobs_db, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker %s polling %s", worker_id, settings.jobs_db)
    while not stop.is_set():
        job = store.claim(worker_id)
        if job is None:
            stop.wait(settings.poll_interval_s)
            continue
        log.info("job %s claimed: %s", job.id, job.params)
        run_job(settings, store, job, worker_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specrec-worker", description=__doc__)
    parser.add_argument(
        "--bootstrap-only",
        action="store_true",
        help="create the default dataset/model if missing, then exit",
    )
    parser.add_argument(
        "--no-bootstrap", action="store_true", help="skip the bootstrap and only process jobs"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = WorkerSettings()
    if not args.no_bootstrap:
        bootstrap(settings)
    if args.bootstrap_only:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve_forever(settings, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
