"""A claimed job in a child process of its own: a crash, an OOM kill or a CUDA error fails
that job, with the cause, and the worker goes on."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import threading

from store.jobs import Job, JobStore
from worker.exits import describe_exit
from worker.job import job_workdir, run_job
from worker.settings import LOG_FORMAT, WorkerSettings

log = logging.getLogger("specrec.worker")


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
