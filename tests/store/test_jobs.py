"""The job queue, on SQLite and on PostgreSQL: one active job, atomic claims, heartbeats,
reaping, cancel, schema versions."""

from __future__ import annotations

import threading
import time

import pytest

from store.jobs import JobStore
from tests.postgres import StoreAt


def test_enqueue_returns_existing_active_job(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"))
    job, created = store.enqueue({"epochs": 3})
    again, created_again = store.enqueue({"epochs": 99})
    assert created and not created_again
    assert again.id == job.id and again.params == {"epochs": 3}
    assert [j.id for j in store.recent()] == [job.id]


def test_concurrent_enqueues_create_exactly_one_job(store_target: StoreAt) -> None:
    path = store_target("jobs")
    JobStore(path)
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        job, created = JobStore(path).enqueue({})
        results.append((job.id, created))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({job_id for job_id, _ in results}) == 1
    assert len(JobStore(path).recent()) == 1


def test_claim_heartbeat_finish_lifecycle(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"))
    assert store.claim("w1") is None
    job, _ = store.enqueue({"epochs": 1})
    claimed = store.claim("w1")
    assert claimed is not None and claimed.id == job.id and claimed.state == "running"
    assert claimed.worker_id == "w1" and claimed.started_at is not None
    assert store.claim("w2") is None  # nothing else queued
    assert store.heartbeat(job.id, "w1", {"epoch": 1, "epochs": 2})
    assert not store.heartbeat(job.id, "w2")  # not w2's job
    assert store.get(job.id).progress == {"epoch": 1, "epochs": 2}
    assert store.finish(job.id, "w1", "succeeded", result={"model_version": "v1"})
    done = store.get(job.id)
    assert done.state == "succeeded" and done.result == {"model_version": "v1"}
    assert done.finished_at >= done.started_at
    # a finished job no longer blocks new ones
    _, created = store.enqueue({})
    assert created
    with pytest.raises(ValueError, match="state must be one of"):
        store.finish(job.id, "w1", "running")  # type: ignore[arg-type]


def test_stale_heartbeat_is_reaped_and_next_job_can_run(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"), heartbeat_timeout_s=0.2)
    job, _ = store.enqueue({})
    assert store.claim("dead-worker").id == job.id
    time.sleep(0.3)
    assert store.reap() == [job.id]
    failed = store.get(job.id)
    assert failed.state == "failed" and "no heartbeat" in failed.error
    # the vanished worker can neither heartbeat nor finish it any more
    assert not store.heartbeat(job.id, "dead-worker")
    assert not store.finish(job.id, "dead-worker", "succeeded")
    assert store.get(job.id).state == "failed"
    nxt, created = store.enqueue({})
    assert created and store.claim("w2").id == nxt.id


def test_cancel_queued_and_running(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"))
    queued, _ = store.enqueue({})
    assert store.cancel(queued.id).state == "cancelled"
    assert store.cancel("nope") is None
    running, _ = store.enqueue({})
    store.claim("w")
    flagged = store.cancel(running.id)
    assert flagged.state == "running" and flagged.cancel_requested
    assert store.cancel_requested(running.id)
    assert store.finish(running.id, "w", "cancelled")
    assert store.get(running.id).state == "cancelled"


def test_queue_survives_reopen(store_target: StoreAt) -> None:
    path = store_target("jobs")
    job, _ = JobStore(path).enqueue({"objective": "directspec+"})
    reopened = JobStore(path)
    assert reopened.get(job.id).state == "queued"
    assert reopened.claim("w").params == {"objective": "directspec+"}


def test_a_job_is_retried_while_it_has_attempts_left(store_target: StoreAt) -> None:
    """claim(max_attempts=2): the first attempt's death queues the job again (the error on that
    attempt), the second claim is attempt 2 with its resume epoch, and a second death is
    refused by retry, so the worker fails the job; each attempt ends with its own error."""
    store = JobStore(store_target("jobs"))
    job, _ = store.enqueue({"epochs": 4})
    first = store.claim("w1", max_attempts=2)
    assert [(a.number, a.worker_id, a.resumed_from, a.ended_at) for a in first.attempts] == [
        (1, "w1", None, None)
    ]
    assert first.max_attempts == 2
    assert store.record_resume(job.id, "w1", None)
    assert not store.retry(job.id, "someone-else", "x")  # only the claiming worker's
    assert store.retry(job.id, "w1", "training process 7 killed by signal 9 (SIGKILL)")
    queued = store.get(job.id)
    assert queued.state == "queued" and queued.worker_id is None
    assert queued.attempts[0].error == "training process 7 killed by signal 9 (SIGKILL)"
    assert queued.attempts[0].ended_at is not None
    assert not store.heartbeat(job.id, "w1")  # the dead attempt's worker lost it

    second = store.claim("w2", max_attempts=2)
    assert second.id == job.id and second.started_at == first.started_at
    assert store.record_resume(job.id, "w2", 3)
    assert not store.retry(job.id, "w2", "died again")  # 2 of 2 attempts: no retry
    assert store.finish(job.id, "w2", "failed", error="died again")
    done = store.get(job.id)
    assert done.state == "failed"
    assert [(a.number, a.worker_id, a.resumed_from, a.error) for a in done.attempts] == [
        (1, "w1", None, "training process 7 killed by signal 9 (SIGKILL)"),
        (2, "w2", 3, "died again"),
    ]


def test_a_reaped_job_with_attempts_left_goes_back_to_the_queue(store_target: StoreAt) -> None:
    store = JobStore(store_target("jobs"), heartbeat_timeout_s=0.2)
    job, _ = store.enqueue({})
    store.claim("vanished", max_attempts=2)
    time.sleep(0.3)
    assert store.reap() == []  # retried, not failed
    again = store.get(job.id)
    assert again.state == "queued" and "no heartbeat" in again.attempts[0].error
    assert store.claim("w2", max_attempts=2).id == job.id
    time.sleep(0.3)
    assert store.reap() == [job.id]  # the second attempt was the last
    failed = store.get(job.id)
    assert failed.state == "failed" and "no heartbeat" in failed.error
    assert [a.worker_id for a in failed.attempts] == ["vanished", "w2"]


def test_a_version_1_queue_is_upgraded_with_its_rows(tmp_path) -> None:
    """A jobs file written before attempts existed: its jobs read as one attempt allowed."""
    from store.db import SQLiteDatabase
    from store.jobs import _STEPS

    db = SQLiteDatabase(tmp_path / "jobs.sqlite")
    db.migrate("jobs", _STEPS[:1])
    with db.write() as conn:
        conn.execute(
            "INSERT INTO jobs (id, state, params, created_at) VALUES ('old', 'queued', '{}', 1.0)"
        )
    store = JobStore(tmp_path / "jobs.sqlite")
    old = store.get("old")
    assert old.state == "queued" and old.attempts == () and old.max_attempts == 1
    assert store.claim("w").attempts[0].number == 1
