"""The worker's poll loop: claim a job, run it in its own process, else maybe queue a
scheduled retrain; keep polling through a job-store outage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from store.db import StoreUnavailable, describe
from store.jobs import JobStore
from worker.isolation import run_job_isolated
from worker.orphans import fail_orphaned_jobs, new_worker_id
from worker.scheduler import RetrainScheduler
from worker.settings import WorkerSettings

log = logging.getLogger("specrec.worker")


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
