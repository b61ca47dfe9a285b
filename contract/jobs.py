"""Persistent retrain-job queue in SQLite (WAL): the API enqueues, one worker claims and runs.

stdlib-only, shared by the service (enqueue, read, cancel) and the worker (claim, heartbeat,
finish). Every state change is one short transaction; ``BEGIN IMMEDIATE`` takes the write lock
up front, so two concurrent enqueues or claims are serialised by SQLite itself.

States: queued -> running -> succeeded | failed | rejected | cancelled; queued -> cancelled.
A running job whose heartbeat is older than the timeout is marked failed by :meth:`reap`
(called by the worker loop and by the API whenever it reads jobs).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contract.sqlite_store import connect, init_db, write_transaction

#: Seconds without a heartbeat after which a running job is failed (SPECREC_HEARTBEAT_TIMEOUT_S).
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0

JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "rejected", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    params           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    heartbeat_at     REAL,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    result           TEXT,
    error            TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created_at);
"""


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
    def _from_row(cls, row: sqlite3.Row) -> Job:
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
    """The queue at `path` (created on first use). Cheap to construct; one connection per call."""

    def __init__(
        self, path: Path | str, heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    ) -> None:
        self.path = Path(path)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        init_db(self.path, _SCHEMA)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self.path)

    # ---- API side ------------------------------------------------------------------------
    def enqueue(self, params: dict[str, Any]) -> tuple[Job, bool]:
        """Queue a job unless one is queued or running: returns (job, created)."""
        self.reap()
        with self._write() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE state IN ('queued', 'running') "
                "ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is not None:
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
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', worker_id = ?, started_at = ?, "
                "heartbeat_at = ? WHERE id = ?",
                (worker_id, now, now, row["id"]),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return Job._from_row(row)

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
        """Fail running jobs whose worker stopped sending heartbeats; returns their ids."""
        cutoff = time.time() - self.heartbeat_timeout_s
        with self._write() as db:
            rows = db.execute(
                "SELECT id FROM jobs WHERE state = 'running' AND heartbeat_at < ?", (cutoff,)
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                    (
                        time.time(),
                        f"worker vanished: no heartbeat for more than "
                        f"{self.heartbeat_timeout_s:g} s",
                        row["id"],
                    ),
                )
        return [r["id"] for r in rows]
