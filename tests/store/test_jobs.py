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
