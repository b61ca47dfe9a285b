"""Persistent retrain-job queue (store.db: a SQLite file, or PostgreSQL for several
machines): the API enqueues, workers claim and run.

Shared by the service (enqueue, read, cancel) and the worker (claim, heartbeat, finish).
Every state change is one short transaction. Enqueueing holds the ``jobs`` lock, so two
concurrent enqueues through any replicas create one job; a claim takes the oldest queued row
no other transaction holds (SQLite: the file's write lock; PostgreSQL: ``FOR UPDATE SKIP
LOCKED``) and moves it to running only if still queued, so each job is claimed once by one
worker, however many workers on however many hosts ask. Heartbeats and reaping use each
host's clock (keep hosts NTP-synchronised: the timeout is tens of seconds).

States: queued -> running -> succeeded | failed | rejected | cancelled; queued -> cancelled.
A running job whose heartbeat is older than the timeout is marked failed by :meth:`reap`
(called by the worker loop and by the API whenever it reads jobs).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from contract.settings import DEFAULT_HEARTBEAT_TIMEOUT_S
from store.db import Dialect, Target, open_database

JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "rejected", "cancelled")

_COLUMNS = """
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    params           TEXT NOT NULL,
    created_at       {real} NOT NULL,
    started_at       {real},
    finished_at      {real},
    heartbeat_at     {real},
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    result           TEXT,
    error            TEXT
"""

#: schema versions, oldest first (store.db.migrate applies the missing ones on start)
_INDEX = "CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created_at)"
_STEPS: list[dict[Dialect, str]] = [
    {
        "sqlite": f"CREATE TABLE IF NOT EXISTS jobs ({_COLUMNS.format(real='REAL')}); {_INDEX}",
        "postgresql": (
            f"CREATE TABLE IF NOT EXISTS jobs ({_COLUMNS.format(real='DOUBLE PRECISION')}); "
            + _INDEX
        ),
    }
]


@dataclass(frozen=True)
class Job:
    """One row of the queue; times are unix seconds (float)."""

    id: str
    state: JobState
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker_id: str | None
    cancel_requested: bool
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def _from_row(cls, row: Any) -> Job:
        def load(text: str | None) -> Any:
            return json.loads(text) if text else None

        return cls(
            id=row["id"],
            state=row["state"],
            params=load(row["params"]) or {},
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            heartbeat_at=row["heartbeat_at"],
            worker_id=row["worker_id"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=load(row["progress"]),
            result=load(row["result"]),
            error=row["error"],
        )


class JobStore:
    """The queue at `target` (a SQLite file or a PostgreSQL URL; created or upgraded on first
    use). Cheap to construct."""

    def __init__(
        self, target: Target, heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    ) -> None:
        self.target = target
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.db = open_database(target)
        self.db.migrate("jobs", _STEPS)
        self._connect = self.db.connect
        self._write = self.db.write

    # ---- API side ------------------------------------------------------------------------
    def enqueue(self, params: dict[str, Any], *, unique: bool = True) -> tuple[Job, bool]:
        """Queue a job unless one is queued or running: returns (job, created).
        ``unique=False`` queues it whatever else is queued (batches of jobs for a pool of
        workers; the API's retrains are always unique)."""
        self.reap()
        with self._write(lock="jobs") as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state IN ('queued', 'running') "
                "ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is not None and unique:
                return Job._from_row(row), False
            job_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, state, params, created_at) VALUES (?, 'queued', ?, ?)",
                (job_id, json.dumps(params), time.time()),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job._from_row(row), True

    def get(self, job_id: str) -> Job | None:
        self.reap()
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job._from_row(row) if row else None

    def recent(self, limit: int = 20) -> list[Job]:
        """Newest first."""
        self.reap()
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Job._from_row(r) for r in rows]

    def cancel(self, job_id: str) -> Job | None:
        """Queued -> cancelled at once; running -> flagged, the worker stops at the next epoch."""
        with self._write() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE id = ?" + self.db.for_update, (job_id,)
            ).fetchone()
            if row is None:
                return None
            if row["state"] == "queued":
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1 "
                    "WHERE id = ?",
                    (time.time(), job_id),
                )
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job._from_row(row)

    # ---- worker side ---------------------------------------------------------------------
    def claim(self, worker_id: str) -> Job | None:
        """Atomically take the oldest queued job (state -> running), or None."""
        self.reap()
        now = time.time()
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1"
                + self.db.skip_locked
            ).fetchone()
            if row is None:
                return None
            row = db.execute(
                "UPDATE jobs SET state = 'running', worker_id = ?, started_at = ?, "
                "heartbeat_at = ? WHERE id = ? AND state = 'queued' RETURNING *",
                (worker_id, now, now, row["id"]),
            ).fetchone()
        return Job._from_row(row) if row is not None else None

    def heartbeat(
        self, job_id: str, worker_id: str, progress: dict[str, Any] | None = None
    ) -> bool:
        """Record liveness (and progress); returns False if the job is no longer ours."""
        with self._write() as db:
            if progress is None:
                cur = db.execute(
                    "UPDATE jobs SET heartbeat_at = ? "
                    "WHERE id = ? AND worker_id = ? AND state = 'running'",
                    (time.time(), job_id, worker_id),
                )
            else:
                cur = db.execute(
                    "UPDATE jobs SET heartbeat_at = ?, progress = ? "
                    "WHERE id = ? AND worker_id = ? AND state = 'running'",
                    (time.time(), json.dumps(progress, default=str), job_id, worker_id),
                )
        return cur.rowcount == 1

    def running(self) -> list[Job]:
        """Jobs in state ``running`` (any worker), oldest first; not reaped first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE state = 'running' ORDER BY created_at"
            ).fetchall()
        return [Job._from_row(r) for r in rows]

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def finish(
        self,
        job_id: str,
        worker_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Move our running job to a final state; False if it was reaped meanwhile."""
        if state not in FINAL_STATES:
            raise ValueError(f"state must be one of {FINAL_STATES}, got {state!r}")
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ? "
                "WHERE id = ? AND worker_id = ? AND state = 'running'",
                (
                    state,
                    time.time(),
                    json.dumps(result, default=str) if result is not None else None,
                    error,
                    job_id,
                    worker_id,
                ),
            )
        return cur.rowcount == 1

    def reap(self) -> list[str]:
        """Fail running jobs whose worker stopped sending heartbeats; returns their ids.
        One statement: concurrent reapers (every worker and replica) fail each job once."""
        now = time.time()
        with self._write() as db:
            rows = db.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                "WHERE state = 'running' AND heartbeat_at < ? RETURNING id",
                (
                    now,
                    f"worker vanished: no heartbeat for more than {self.heartbeat_timeout_s:g} s",
                    now - self.heartbeat_timeout_s,
                ),
            ).fetchall()
        return [r["id"] for r in rows]
