"""Worker ids, and the jobs left running by dead workers on this host."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid

from store.jobs import FINAL_STATES, JobStore
from worker.settings import WorkerSettings

log = logging.getLogger("specrec.worker")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def fail_orphaned_jobs(store: JobStore, worker_id: str) -> list[str]:
    """Retry or else fail running jobs of dead workers on this host (worker ids
    ``host:pid:nonce``); returns the ids of those failed. A job with attempts left goes back
    to the queue (JobStore.retry), to resume from its checkpoint.

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
            if store.retry(job.id, job.worker_id or "", error):
                log.warning("job %s: %s; queued again to resume from its checkpoint", job.id, error)
            elif store.finish(job.id, job.worker_id or "", "failed", error=error):
                log.error("job %s failed: %s", job.id, error)
                failed.append(job.id)
    return failed


def remove_ended_workdirs(settings: WorkerSettings, store: JobStore) -> list[str]:
    """Remove the work directories (checkpoints included) of jobs that ended or are unknown,
    e.g. one failed by a reaper after its worker vanished; returns their job ids."""
    removed = []
    root = settings.home / "tmp"
    for path in sorted(root.glob("job-*")) if root.is_dir() else ():
        job = store.get(path.name.removeprefix("job-"))
        if job is None or job.state in FINAL_STATES:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name.removeprefix("job-"))
    return removed


def new_worker_id() -> str:
    """``host:pid:nonce``: the nonce tells two workers with the same (recycled) pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
