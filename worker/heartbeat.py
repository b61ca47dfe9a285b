"""A running job's heartbeats, sent from a side thread of the job's process."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from store.db import StoreUnavailable
from store.jobs import JobStore

log = logging.getLogger("specrec.worker")

#: Exit status of a job process that found its worker gone (see Heartbeat).
EXIT_ORPHANED = 70


class Heartbeat(threading.Thread):
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
