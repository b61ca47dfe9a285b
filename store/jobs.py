"""Persistent retrain-job queue (store.db: a SQLite file, or PostgreSQL for several
machines): the API enqueues, workers claim and run.

Shared by the service (enqueue, read, cancel) and the worker (claim, heartbeat, finish).
Every state change is one short transaction. Enqueueing holds the ``jobs`` lock, so two
concurrent enqueues through any replicas create one job; a claim takes the oldest queued row
no other transaction holds (SQLite: the file's write lock; PostgreSQL: ``FOR UPDATE SKIP
LOCKED``) and moves it to running only if still queued, so each job is claimed once by one
worker, however many workers on however many hosts ask. Heartbeats and reaping use each
host's clock (keep hosts NTP-synchronised: the timeout is tens of seconds).

States: queued -> running -> succeeded | failed | rejected | cancelled; queued -> cancelled;
running -> queued (a retry). A running job whose heartbeat is older than the timeout is
retried or failed by :meth:`reap` (called by the worker loop and by the API whenever it reads
jobs).

Attempts: every claim starts an attempt (``Job.attempts``: who ran it, from which checkpoint
epoch it resumed, how it ended). A job whose attempt died (its training process or its
worker) goes back to the queue while it has fewer attempts than ``max_attempts`` (set by the
claiming worker: 1 + SPECREC_JOB_RETRIES), else it fails.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, replace
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
    },
    {  # 2: attempts (retries from checkpoints)
        "sqlite": "ALTER TABLE jobs ADD COLUMN attempts TEXT; "
        "ALTER TABLE jobs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1",
        "postgresql": "ALTER TABLE jobs ADD COLUMN attempts TEXT; "
        "ALTER TABLE jobs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1",
    },
]


@dataclass(frozen=True)
class Attempt:
    """One run of a job by a worker; times are unix seconds."""

    number: int  # 1, 2, ...
    worker_id: str
    started_at: float
    resumed_from: int | None = None  # the checkpoint epoch it continued from (None: epoch 0)
    ended_at: float | None = None
    error: str | None = None  # why it ended without finishing the job (None: it did, or runs)


def _load_attempts(text: str | None) -> list[Attempt]:
    return [Attempt(**a) for a in json.loads(text)] if text else []


def _dump_attempts(attempts: list[Attempt]) -> str:
    return json.dumps([asdict(a) for a in attempts])


def _ended(attempts: list[Attempt], now: float, error: str | None) -> list[Attempt]:
    """`attempts` with the last one, if still open, ended at `now` with `error`."""
    if attempts and attempts[-1].ended_at is None:
        return [*attempts[:-1], replace(attempts[-1], ended_at=now, error=error)]
    return attempts


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
    attempts: tuple[Attempt, ...] = ()
    max_attempts: int = 1

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
            attempts=tuple(_load_attempts(row["attempts"])),
            max_attempts=int(row["max_attempts"]),
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
    def claim(self, worker_id: str, max_attempts: int = 1) -> Job | None:
        """Atomically take the oldest queued job (state -> running), or None; it starts a new
        attempt, and the job may be tried `max_attempts` times in all (see retry)."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts: {max_attempts!r}, expected >= 1")
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
                "UPDATE jobs SET state = 'running', worker_id = ?, "
                "started_at = COALESCE(started_at, ?), heartbeat_at = ?, max_attempts = ? "
                "WHERE id = ? AND state = 'queued' RETURNING *",
                (worker_id, now, now, max_attempts, row["id"]),
            ).fetchone()
            if row is None:
                return None
            attempts = _load_attempts(row["attempts"])
            attempts.append(Attempt(len(attempts) + 1, worker_id, now))
            row = db.execute(
                "UPDATE jobs SET attempts = ? WHERE id = ? RETURNING *",
                (_dump_attempts(attempts), row["id"]),
            ).fetchone()
        return Job._from_row(row)

    def record_resume(self, job_id: str, worker_id: str, epoch: int | None) -> bool:
        """Note on the running attempt the checkpoint epoch it resumes from (None: none);
        False if the job is no longer ours."""
        with self._write() as db:
            row = self._our_running(db, job_id, worker_id)
            if row is None:
                return False
            attempts = _load_attempts(row["attempts"])
            if attempts:
                attempts[-1] = replace(attempts[-1], resumed_from=epoch)
            db.execute(
                "UPDATE jobs SET attempts = ? WHERE id = ?", (_dump_attempts(attempts), job_id)
            )
        return True

    def retry(self, job_id: str, worker_id: str, error: str) -> bool:
        """Our running job's attempt died with `error`: back to the queue (True) if it has
        attempts left, else nothing changes (False: the caller fails it)."""
        with self._write() as db:
            row = self._our_running(db, job_id, worker_id)
            if row is None:
                return False
            return self._requeue(db, job_id, row, time.time(), error)

    def _our_running(self, db: Any, job_id: str, worker_id: str) -> Any:
        """Inside a write transaction: the row (attempts, max_attempts) of `job_id` if it is
        running on `worker_id`, locked for the update; None otherwise."""
        return db.execute(
            "SELECT attempts, max_attempts FROM jobs "
            "WHERE id = ? AND worker_id = ? AND state = 'running'" + self.db.for_update,
            (job_id, worker_id),
        ).fetchone()

    @staticmethod
    def _requeue(db: Any, job_id: str, row: Any, now: float, error: str) -> bool:
        """Inside a write transaction holding `row` (attempts, max_attempts) of a running job:
        end its attempt with `error` and queue it again, if it has attempts left."""
        attempts = _load_attempts(row["attempts"])
        if len(attempts) >= int(row["max_attempts"]):
            return False
        db.execute(
            "UPDATE jobs SET state = 'queued', worker_id = NULL, heartbeat_at = NULL, "
            "attempts = ? WHERE id = ? AND state = 'running'",
            (_dump_attempts(_ended(attempts, now, error)), job_id),
        )
        return True

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
        """Move our running job to a final state (its attempt ends with it); False if it was
        reaped meanwhile."""
        if state not in FINAL_STATES:
            raise ValueError(f"state must be one of {FINAL_STATES}, got {state!r}")
        now = time.time()
        with self._write() as db:
            row = self._our_running(db, job_id, worker_id)
            if row is None:
                return False
            attempts = _ended(_load_attempts(row["attempts"]), now, error)
            cur = db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ?, attempts = ? "
                "WHERE id = ? AND worker_id = ? AND state = 'running'",
                (
                    state,
                    now,
                    json.dumps(result, default=str) if result is not None else None,
                    error,
                    _dump_attempts(attempts),
                    job_id,
                    worker_id,
                ),
            )
        return cur.rowcount == 1

    def reap(self) -> list[str]:
        """Retry (see retry) or else fail running jobs whose worker stopped sending heartbeats;
        returns the ids of those failed. The rows are locked first (SQLite: the write lock;
        PostgreSQL: FOR UPDATE, re-checked by a waiting reaper), so concurrent reapers (every
        worker and replica) handle each job once."""
        now = time.time()
        error = f"worker vanished: no heartbeat for more than {self.heartbeat_timeout_s:g} s"
        failed = []
        with self._write() as db:
            rows = db.execute(
                "SELECT id, attempts, max_attempts FROM jobs "
                "WHERE state = 'running' AND heartbeat_at < ?" + self.db.for_update,
                (now - self.heartbeat_timeout_s,),
            ).fetchall()
            for row in rows:
                if self._requeue(db, row["id"], row, now, error):
                    continue
                attempts = _ended(_load_attempts(row["attempts"]), now, error)
                db.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?, attempts = ? "
                    "WHERE id = ? AND state = 'running'",
                    (now, error, _dump_attempts(attempts), row["id"]),
                )
                failed.append(row["id"])
        return failed
