"""The training worker (`specrec-worker`): bootstrap a default model, then run retrain jobs.

The worker process claims a queued job atomically and runs it in a child process of its own
(``run_job_isolated``), so an OOM kill, a segfault or a CUDA error fails that job, with the cause
("killed by signal 9 (SIGKILL)"), and the worker goes on with the next one. The child sends
heartbeats from a side thread, trains on the dataset plus all ingested interactions (merged in
memory, keeping the dataset's own train/test split: trainer.data.merge_ingested) with the
TrainConfig the API stored with the job (an evaluation run on the split, then a refit on every
pair: trainer.refit, the job's ``refit``), applies the quality gate to the evaluation run and
publishes the refit; it exits by itself when its worker is gone.
A worker that starts fails the jobs left running by a dead worker on the same host at once
(others fail after the heartbeat timeout). The service hot-swaps to the new version by watching
the registry's CURRENT pointer.

Scheduled retraining (off by default): when idle, the worker queues a retrain by itself once
``retrain_after_interactions`` rows were ingested beyond those the serving model was trained on,
or the serving model is ``retrain_after_s`` old (RetrainScheduler; the job records why).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from contract import layout
from contract.artifact import ArtifactInvalid, ModelNotFound, ModelRegistry
from contract.config import TrainConfig
from contract.db import StoreUnavailable, describe
from contract.feedback import FeedbackSnapshot, FeedbackStore
from contract.jobs import ACTIVE_STATES, Job, JobStore
from contract.jobspec import (
    PROCESSES_KEY,
    TRAIN_CONFIG_KEY,
    TRIGGER_KEY,
    job_params,
    job_refit,
    train_config_for_job,
)
from contract.settings import GateSettings, HomeSettings
from trainer.gate import decide
from trainer.launch import DEFAULT_TIMEOUT_S, describe_exit

if TYPE_CHECKING:
    from trainer.data import Dataset

log = logging.getLogger("specrec.worker")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class WorkerSettings(HomeSettings, GateSettings):
    """The worker's configuration: the shared settings, the gate, and its own below."""

    model_config = HomeSettings.model_config

    dataset: str = "default"
    """Dataset under ``<home>/data`` that retrain jobs train on unless a job names one."""
    heartbeat_interval_s: float = Field(2.0, gt=0)
    """Seconds between a running job's heartbeats."""
    poll_interval_s: float = Field(1.0, gt=0)
    """Seconds between job-queue polls."""
    device: str | None = None
    """cpu, cuda, cuda:N or mps; unset or auto: CUDA when present, else CPU."""
    retrain_after_interactions: int = Field(0, ge=0)
    """Queue a retrain by itself once this many interactions were ingested beyond those the
    serving model was trained on (0: off)."""
    retrain_after_s: float = Field(0.0, ge=0)
    """Queue a retrain by itself once the serving model is this many seconds old (0: off)."""
    train_processes: int = Field(1, ge=1, le=1024)
    """Data-parallel training processes (torchrun ranks) of a job that does not ask for a
    number itself (``processes`` of POST /retrain); 1: train in the job's own process."""
    dist_timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    """Seconds a rank of a data-parallel job waits for the others before the job fails."""
    refit: bool = True
    """Publish a model refitted on every known pair after the evaluation run (trainer.refit),
    for the bootstrap and for jobs that do not say (``refit`` of POST /retrain)."""


def ensure_default_dataset(settings: WorkerSettings) -> Path:
    from trainer.synthetic import write_dataset

    out = settings.dataset_dir("default")
    write_dataset(out)
    return out


def bootstrap(settings: WorkerSettings) -> str | None:
    """Generate the default dataset and train+publish a default model if none is published."""
    from contract.config import default_synthetic_config
    from trainer.data import load_dataset
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.train import fit

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
    fitted = evaluate_then_refit(ds, cfg, fit, refit=settings.refit)
    if registry.current() is not None:  # another worker on the shared registry was faster
        log.info("model %s was published meanwhile; not publishing mine", registry.current())
        return None
    version = publish_fitted(fitted, ds, cfg, registry, keep=settings.keep_versions)
    log.info("published default model %s (%s)", version, fitted.evaluation.metrics)
    return version


class _Heartbeat(threading.Thread):
    """Sends heartbeats (with the latest progress) until stopped.

    With ``parent_pid`` (a job's own process) it also ends the process when that parent, the
    worker, is gone: an orphaned job must not publish behind the back of the worker that
    replaced it. Its job then fails at the next worker start or after the heartbeat timeout.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        worker_id: str,
        interval: float,
        parent_pid: int | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.store, self.job_id, self.worker_id, self.interval = store, job_id, worker_id, interval
        self.parent_pid = parent_pid
        self.progress: dict[str, Any] = {"stage": "starting"}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.error(
                    "job %s: worker %d is gone; stopping this job", self.job_id, self.parent_pid
                )
                os._exit(EXIT_ORPHANED)
            try:
                self.store.heartbeat(self.job_id, self.worker_id, self.progress)
            except StoreUnavailable as e:  # the next beat tries again; the job goes on
                log.warning("job %s: heartbeat not recorded: %s", self.job_id, e)

    def stop(self) -> None:
        self._stop_event.set()


def job_train_config(job: Job, device: str | None) -> TrainConfig:
    """The TrainConfig ``job`` runs with, on this worker's ``device`` (None: auto).

    The API resolves a job's config once, when it is queued, and stores it with the job
    (``params["train_config"]``, a ``TrainConfig.to_dict()`` without a device); the worker runs
    exactly that. A job queued without it (older queue rows, tests that enqueue directly) is
    resolved from its parameters here, as the API would have. The device is always the
    worker's: it is no part of what a job asks for.
    """
    stored = job.params.get(TRAIN_CONFIG_KEY)
    if stored is None:
        return train_config_for_job(job.params, device)
    return TrainConfig.from_dict(stored).with_overrides(device=device)


def _training_set(settings: WorkerSettings, job: Job) -> tuple[Dataset, FeedbackSnapshot]:
    """The job's dataset plus every ingested interaction, in memory, keeping its split.

    The ingested rows are one point-in-time read of the FeedbackStore; the returned snapshot
    says up to which ``seq`` they go (rows ingested later are the next retrain's).
    """
    from trainer.data import load_dataset, merge_ingested

    name = job.params.get("dataset") or settings.dataset
    base = settings.dataset_dir(name)
    if name == "default":
        ensure_default_dataset(settings)
    if not base.exists():
        raise FileNotFoundError(f"dataset {name!r} not found at {base}")
    ds = load_dataset(base)
    snapshot = FeedbackStore(settings.feedback_db).snapshot()
    merged = merge_ingested(ds, snapshot.rows)
    log.info(
        "job %s: %s plus %d ingested interactions (up to seq %d): %d users, %d items, "
        "%d train / %d test pairs",
        job.id,
        ds.name,
        len(snapshot.rows),
        snapshot.max_seq,
        merged.n_users,
        merged.n_items,
        merged.n_train,
        merged.n_test,
    )
    return merged, snapshot


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

    beat = _Heartbeat(store, job.id, worker_id, settings.heartbeat_interval_s, parent_pid)
    beat.start()
    try:
        cfg = job_train_config(job, settings.device)
        beat.progress = {"stage": "loading data"}
        ds, snapshot = _training_set(settings, job)
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
    """Where a data-parallel job's ranks exchange files (trainer.job_ranks)."""
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
    """fit() in this process, or in `processes` torchrun ranks (trainer.job_ranks) whose work
    directory ``<home>/tmp/job-<id>`` is removed afterwards (the ranks' output of a failed
    run is kept as ``<home>/logs/job-<id>-ranks.log``)."""

    def should_stop() -> bool:
        return store.cancel_requested(job.id)

    if processes == 1:
        from trainer.train import fit

        return fit(ds, cfg, progress=on_epoch, should_stop=should_stop)
    from trainer.job_ranks import run_ranks

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


#: Exit status of a job process that found its worker gone (see _Heartbeat).
EXIT_ORPHANED = 70


def _job_process(settings: WorkerSettings, job_id: str, worker_id: str, parent_pid: int) -> None:
    """Entry point of a job's own process (spawned: a fresh interpreter, no inherited locks)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    store = JobStore(settings.jobs_db, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    job = store.get(job_id)
    if job is None or job.state != "running" or job.worker_id != worker_id:
        log.warning("job %s is no longer ours (%s); not running it", job_id, job and job.state)
        return
    run_job(settings, store, job, worker_id, parent_pid=parent_pid)


def run_job_isolated(
    settings: WorkerSettings,
    store: JobStore,
    job: Job,
    worker_id: str,
    stop: threading.Event | None = None,
) -> int:
    """Run a claimed job in a child process; returns its exit code.

    A child that dies before finishing the job (signal, crash, ``os._exit``) fails the job with
    the cause at once, not after the heartbeat timeout. ``stop`` set meanwhile (the worker is
    shutting down) terminates the child, which fails the job the same way.
    """
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=_job_process,
        args=(settings, job.id, worker_id, os.getpid()),
        name=f"specrec-job-{job.id[:8]}",
    )
    proc.start()
    log.info("job %s: training in process %d", job.id, proc.pid)
    terminated = False
    while True:
        proc.join(timeout=settings.poll_interval_s)
        if proc.exitcode is not None:
            break
        if stop is not None and stop.is_set() and not terminated:
            log.warning("worker stopping: terminating job %s (process %d)", job.id, proc.pid)
            proc.terminate()
            terminated = True
    code = proc.exitcode
    # a data-parallel job's work directory, left behind when its process was killed
    shutil.rmtree(job_workdir(settings, job.id), ignore_errors=True)
    left = store.get(job.id)
    if left is not None and left.state == "running" and left.worker_id == worker_id:
        error = f"training process {proc.pid} {describe_exit(code)} before the job finished"
        if terminated:
            error += ": the worker was shut down"
        elif code == -signal.SIGKILL:
            error += " (out of memory? the kernel's OOM killer sends SIGKILL)"
        store.finish(job.id, worker_id, "failed", error=error, result=None)
        log.error("job %s failed: %s", job.id, error)
    return code


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def fail_orphaned_jobs(store: JobStore, worker_id: str) -> list[str]:
    """Fail running jobs of dead workers on this host (worker ids ``host:pid:nonce``).

    A previous worker's pid may have been recycled (a restarted container's worker is pid 1
    again): a pid equal to our own is that previous worker too. Workers on other hosts, or with
    a live pid, are left to the heartbeat timeout.
    """
    host, own_pid, _ = worker_id.split(":")
    failed = []
    for job in store.running():
        parts = (job.worker_id or "").split(":")
        if len(parts) != 3 or parts[0] != host or job.worker_id == worker_id:
            continue
        pid = int(parts[1]) if parts[1].isdigit() else -1
        if pid == int(own_pid) or not _pid_alive(pid):
            error = f"worker {job.worker_id} ended while the job ran (process gone)"
            if store.finish(job.id, job.worker_id or "", "failed", error=error):
                log.error("job %s failed: %s", job.id, error)
                failed.append(job.id)
    return failed


def new_worker_id() -> str:
    """``host:pid:nonce``: the nonce tells two workers with the same (recycled) pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: A triggered job that ended without publishing holds its trigger back for
#: max(retrain_after_s, RETRY_POLLS x poll_interval_s), doubled per consecutive such job ...
RETRY_POLLS = 60
#: ... up to this many seconds (or retrain_after_s, if longer).
RETRY_MAX_S = 86400.0
#: Jobs looked at (newest first) to find the triggered jobs that ended unpublished.
RETRY_HISTORY = 50


class RetrainScheduler:
    """Scheduled retraining: queues a retrain when enough new interactions arrived or the
    serving model is old enough (``retrain_after_interactions`` / ``retrain_after_s``, 0: off).

    New interactions are FeedbackStore rows with a seq above the serving model's manifest
    ``ingested.max_seq`` (0 for a model without it); seqs are AUTOINCREMENT in an append-only
    log, so their number is ``max_seq() - that``. The model's age is now minus its manifest's
    ``created_unix``; no model (or an unreadable manifest): no time trigger. The job is an API
    job with no body on the worker's dataset (``job_params``), with ``params["trigger"]``
    saying why. ``JobStore.enqueue`` refuses it while another job is queued or running.

    No tight loop on a job that keeps failing: after a triggered job ends without publishing
    (failed, rejected by the gate, cancelled), its trigger is held back for
    max(retrain_after_s, RETRY_POLLS x poll_interval_s), doubled for each consecutive
    unpublished triggered job (capped at max(RETRY_MAX_S, retrain_after_s)); a succeeded job
    ends the streak. Meanwhile the time trigger stays off and the interactions trigger counts
    only rows beyond those that job was triggered with (``trigger.max_seq``): another full
    threshold of new rows triggers at once. The streak is read from the job queue, so a
    restarted worker keeps it.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        store: JobStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self._next_check = float("-inf")

    @property
    def enabled(self) -> bool:
        s = self.settings
        return s.retrain_after_interactions > 0 or s.retrain_after_s > 0

    def maybe_enqueue(self) -> Job | None:
        """At most once per poll interval: queue a retrain if one is due; the new job or None."""
        now = self.clock()
        if not self.enabled or now < self._next_check:
            return None
        self._next_check = now + self.settings.poll_interval_s
        trigger = self.due(now)
        if trigger is None:
            return None
        params = job_params({"dataset": self.settings.dataset}, trigger)
        job, created = self.store.enqueue(params)
        if not created:
            log.debug("retrain due (%s) but job %s is %s", trigger, job.id, job.state)
            return None
        log.info("queued retrain job %s by itself: %s", job.id, trigger)
        return job

    def _serving(self) -> tuple[str | None, dict[str, Any] | None]:
        registry = ModelRegistry(self.settings.registry_root)
        version = registry.current()
        if version is None:
            return None, None
        try:
            return version, registry.manifest(version)
        except (ArtifactInvalid, ModelNotFound) as e:
            log.warning("scheduled retraining: serving model %s unreadable: %s", version, e)
            return version, None

    def due(self, now: float) -> dict[str, Any] | None:
        """The trigger of a retrain due at ``now`` (see the class), or None."""
        s = self.settings
        version, manifest = self._serving()
        ingested = (manifest or {}).get("ingested")
        trained_seq = int(ingested.get("max_seq") or 0) if isinstance(ingested, dict) else 0
        latest = FeedbackStore(s.feedback_db).max_seq()
        new_rows = latest - trained_seq
        created = (manifest or {}).get("created_unix")
        age = now - created if isinstance(created, int | float) else None
        by_rows = 0 < s.retrain_after_interactions <= new_rows
        by_age = s.retrain_after_s > 0 and age is not None and age >= s.retrain_after_s
        if not (by_rows or by_age):
            return None
        held_seq = self._held_seq(now)
        if held_seq is not None:
            since = max(held_seq, trained_seq)
            by_rows = by_rows and latest - since >= s.retrain_after_interactions
            by_age = False
        common = {"max_seq": latest, "model_version": version}
        if by_rows:
            return {
                "kind": "interactions",
                "new_rows": new_rows,
                "threshold": s.retrain_after_interactions,
                **common,
            }
        if by_age:
            assert age is not None
            return {
                "kind": "schedule",
                "age_s": round(age, 3),
                "threshold_s": s.retrain_after_s,
                **common,
            }
        return None

    def retry_after_s(self, streak: int) -> float:
        """How long a trigger is held back after ``streak`` consecutive unpublished jobs."""
        s = self.settings
        base = max(s.retrain_after_s, RETRY_POLLS * s.poll_interval_s)
        return float(min(base * 2 ** (streak - 1), max(RETRY_MAX_S, s.retrain_after_s)))

    def _held_seq(self, now: float) -> int | None:
        """While a triggered job's unpublished end holds triggers back: the feedback seq it was
        triggered with; else None."""
        streak, last = 0, None
        for job in self.store.recent(RETRY_HISTORY):
            if job.state in ACTIVE_STATES:
                continue
            if job.state == "succeeded":
                break
            if isinstance(job.params.get(TRIGGER_KEY), dict):
                streak += 1
                last = last or job
        if last is None:
            return None
        ended = last.finished_at if last.finished_at is not None else last.created_at
        if now >= ended + self.retry_after_s(streak):
            return None
        return int(last.params[TRIGGER_KEY].get("max_seq") or 0)


def serve_forever(
    settings: WorkerSettings, stop: threading.Event, clock: Callable[[], float] = time.time
) -> None:
    worker_id = new_worker_id()
    store = _wait_for_store(settings, stop)
    if store is None:
        return
    fail_orphaned_jobs(store, worker_id)
    scheduler = RetrainScheduler(settings, store, clock)
    log.info("worker %s polling %s", worker_id, describe(settings.jobs_db))
    down = False
    while not stop.is_set():
        try:
            job = store.claim(worker_id)
            down = False
            if job is None:
                if scheduler.maybe_enqueue() is None:
                    stop.wait(settings.poll_interval_s)
                continue
            log.info("job %s claimed: %s", job.id, job.params)
            run_job_isolated(settings, store, job, worker_id, stop)
        except StoreUnavailable as e:  # PostgreSQL down: keep polling, say so once
            if not down:
                log.warning("the job store is unavailable (%s); retrying", e)
            down = True
            stop.wait(max(settings.poll_interval_s, STORE_RETRY_S))


#: seconds between a worker's attempts to reach an unavailable job store
STORE_RETRY_S = 2.0


def _wait_for_store(settings: WorkerSettings, stop: threading.Event) -> JobStore | None:
    """The job store once it answers (its schema created or upgraded); None if stopped first."""
    warned = False
    while not stop.is_set():
        try:
            return JobStore(settings.jobs_db, heartbeat_timeout_s=settings.heartbeat_timeout_s)
        except StoreUnavailable as e:
            if not warned:
                log.warning("waiting for the job store: %s", e)
                warned = True
            stop.wait(STORE_RETRY_S)
    return None


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
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
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
