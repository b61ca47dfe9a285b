"""The database under both stores, on SQLite and on PostgreSQL: versioned schemas upgraded on
start, claims by many workers at once, concurrent reapers, and following the interaction log."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from store.db import PostgresDatabase, SQLiteDatabase, describe
from store.feedback import FeedbackStore, FeedbackWatcher, Interaction
from store.jobs import JobStore
from tests.postgres import StoreAt


def _version(store: JobStore | FeedbackStore, name: str) -> int:
    with store.db.connect() as db:
        row = db.execute("SELECT version FROM specrec_schema WHERE store = ?", (name,)).fetchone()
    return int(row[0])


def test_a_new_database_records_each_stores_schema_version(store_target: StoreAt) -> None:
    jobs, feedback = JobStore(store_target("jobs")), FeedbackStore(store_target("fb"))
    assert _version(jobs, "jobs") == 1 and _version(feedback, "interactions") == 1
    JobStore(store_target("jobs"))  # a second start changes nothing
    assert _version(jobs, "jobs") == 1


def test_a_schema_newer_than_the_code_is_refused(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"))
    with store.db.connect() as db:
        db.execute("UPDATE specrec_schema SET version = 7 WHERE store = 'jobs'")
    target = store_target("jobs")
    # a process starting now (a new pool: each process checks once)
    db = PostgresDatabase(target) if isinstance(target, str) else SQLiteDatabase(target)
    with pytest.raises(RuntimeError, match="jobs schema is version 7, newer than this code"):
        db.migrate("jobs", [{"sqlite": "", "postgresql": ""}])


def test_files_from_before_schema_versions_are_upgraded_with_their_rows(tmp_path: Path) -> None:
    """The SQLite files of earlier releases (tables, no version table) keep every row."""
    with sqlite3.connect(tmp_path / "interactions.sqlite") as db:
        db.execute(
            "CREATE TABLE interactions (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT "
            "NOT NULL, item_id TEXT NOT NULL, timestamp REAL NOT NULL, ingested_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO interactions VALUES (1, 'u1', 'i1', 5.0, 6.0)")
    store = FeedbackStore(tmp_path / "interactions.sqlite")
    assert _version(store, "interactions") == 1
    assert store.rows() == [("u1", "i1", 5.0)]
    assert store.append([Interaction("u2", "i2", 7.0)]) == 2


def test_many_workers_claim_each_job_exactly_once(store_target: StoreAt) -> None:
    """Twenty queued jobs, eight claimers racing with their own connections: every job is
    claimed by exactly one of them, in queue order per claimer."""
    target = store_target("jobs")
    ids = [JobStore(target).enqueue({"n": n}, unique=False)[0].id for n in range(20)]
    claimed: list[tuple[str, str]] = []
    barrier = threading.Barrier(8)

    def claimer(worker: str) -> None:
        store = JobStore(target)
        barrier.wait()
        while (job := store.claim(worker)) is not None:
            claimed.append((job.id, worker))

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(job_id for job_id, _ in claimed)
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    store = JobStore(target)
    assert {store.get(i).worker_id for i in ids} == {w for _, w in claimed}
    assert all(store.get(job_id).worker_id == w for job_id, w in claimed)


def test_concurrent_reapers_fail_each_stale_job_once(store_target: StoreAt) -> None:
    target = store_target("jobs")
    store = JobStore(target, heartbeat_timeout_s=0.2)
    for n in range(5):
        store.enqueue({"n": n}, unique=False)
        store.claim(f"dead-{n}")
    time.sleep(0.3)
    reaped: list[str] = []
    barrier = threading.Barrier(6)

    def reaper() -> None:
        s = JobStore(target, heartbeat_timeout_s=0.2)
        barrier.wait()
        reaped.extend(s.reap())

    threads = [threading.Thread(target=reaper) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reaped) == len(set(reaped)) == 5
    assert {j.state for j in store.recent()} == {"failed"}


def test_the_watcher_sees_other_connections_commits(store_target: StoreAt) -> None:
    target = store_target("fb")
    watcher = FeedbackWatcher(target)
    try:
        assert watcher.changed()  # the first call
        assert not watcher.changed()
        FeedbackStore(target).append([Interaction("u1", "i1", 1.0), Interaction("u2", "i2", 2.0)])
        deadline = time.monotonic() + 5
        while not watcher.changed():  # PostgreSQL: the notification arrives asynchronously
            assert time.monotonic() < deadline, "the commit was never seen"
            time.sleep(0.005)
        assert not watcher.changed()
        assert watcher.rows_after(0) == [(1, "u1", "i1"), (2, "u2", "i2")]
        assert watcher.rows_after(1) == [(2, "u2", "i2")]
    finally:
        watcher.close()


def test_logs_never_show_the_database_password() -> None:
    url = "postgresql://specrec:s3cret@db.internal:5432/specrec"
    assert describe(url) == "postgresql://specrec:***@db.internal:5432/specrec"
    assert describe("postgresql://specrec@db/x") == "postgresql://specrec@db/x"
    assert describe(Path("/var/jobs.sqlite")) == "/var/jobs.sqlite"
