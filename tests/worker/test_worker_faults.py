"""The worker around a publish that fails: the job is `failed` with the cause, the serving model
stays, and the next job publishes. (Killed processes: tests/e2e/test_launcher.py.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ModelRegistry
from store.jobs import JobStore
from worker.exits import describe_exit
from worker.job import run_job
from worker.orphans import fail_orphaned_jobs
from worker.settings import WorkerSettings


@pytest.fixture
def settings(worker_home: Path) -> WorkerSettings:
    return WorkerSettings(home=worker_home, heartbeat_interval_s=0.2)


def _run(settings: WorkerSettings, store: JobStore, params: dict) -> str:
    job, created = store.enqueue(params)
    assert created
    run_job(settings, store, store.claim("w"), "w")
    return job.id


def test_disk_full_while_publishing_fails_the_job_and_keeps_the_serving_model(
    settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(settings.jobs_db)
    registry = ModelRegistry(settings.registry_root)
    first = store.get(_run(settings, store, {"epochs": 2, "force": True}))
    assert first.state == "succeeded", first.error
    serving = registry.load()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        failed = store.get(_run(settings, store, {"epochs": 2, "force": True}))
    assert failed.state == "failed"
    assert failed.error.startswith("PublishFailed: [Errno 28]")
    assert f"CURRENT is {first.result['model_version']}" in failed.error
    assert registry.current() == first.result["model_version"]
    assert registry.versions() == [first.result["model_version"]]  # nothing half-published
    np.testing.assert_array_equal(registry.load().arrays.user_emb, serving.arrays.user_emb)

    third = store.get(_run(settings, store, {"epochs": 2, "force": True}))
    assert third.state == "succeeded", third.error
    assert registry.current() == third.result["model_version"]
    assert registry.pointer()["previous"] == first.result["model_version"]


def test_exit_codes_in_words() -> None:
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV)"
    assert describe_exit(1) == "exited with status 1"


DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: never alive


@pytest.mark.parametrize(
    ("previous", "orphaned"),
    [
        (f"thishost:{DEAD_PID}:old", True),  # its process is gone
        (f"thishost:{os.getpid()}:old", True),  # our own pid, another nonce: a recycled pid
        ("thishost:1:live", False),  # pid 1 is alive: left to the heartbeat timeout
        (f"otherhost:{DEAD_PID}:x", False),  # another host: left to the heartbeat timeout
    ],
)
def test_a_starting_worker_fails_the_running_job_of_a_dead_worker_on_its_host(
    settings: WorkerSettings, previous: str, orphaned: bool
) -> None:
    store = JobStore(settings.jobs_db)
    job, _ = store.enqueue({"epochs": 1})
    assert store.claim(previous).id == job.id
    failed = fail_orphaned_jobs(store, f"thishost:{os.getpid()}:new")
    left = store.get(job.id)
    if orphaned:
        assert failed == [job.id] and left.state == "failed"
        assert left.error == f"worker {previous} ended while the job ran (process gone)"
    else:
        assert failed == [] and left.state == "running"


def test_a_worker_waits_for_an_unreachable_store_then_runs_its_jobs(
    worker_home: Path, postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL not there when the worker starts (a database that does not exist yet): the
    worker keeps trying instead of dying, and runs the job queued once the store answers."""
    import threading
    import time

    import psycopg

    from store import db as store_db
    from worker import loop as worker_loop
    from worker.loop import serve_forever

    monkeypatch.setattr(store_db, "POOL_TIMEOUT_S", 0.5)
    monkeypatch.setattr(worker_loop, "STORE_RETRY_S", 0.1)
    name = "t_late_" + os.urandom(6).hex()
    settings = WorkerSettings(
        home=worker_home,
        database_url=postgres.url(name),
        poll_interval_s=0.1,
        heartbeat_interval_s=0.3,
    )
    stop = threading.Event()
    worker = threading.Thread(target=serve_forever, args=(settings, stop), daemon=True)
    worker.start()
    try:
        time.sleep(1.5)
        assert worker.is_alive()
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        store = JobStore(settings.jobs_db)  # the store answers at once: a fresh pool
        job, _ = store.enqueue({"epochs": 1, "force": True})
        deadline = time.monotonic() + 120
        while store.get(job.id).state in ("queued", "running"):
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.2)
        done = store.get(job.id)
        assert done.state == "succeeded", done.error
        assert ModelRegistry(settings.registry_root).current() == done.result["model_version"]
    finally:
        stop.set()
        worker.join(timeout=60)
