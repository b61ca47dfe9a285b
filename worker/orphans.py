"""Worker ids, and the jobs left running by dead workers on this host."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from store.jobs import JobStore

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
