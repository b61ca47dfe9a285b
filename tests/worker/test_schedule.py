"""Scheduled retraining (worker.scheduler.RetrainScheduler): the idle worker queues a retrain by
itself after enough new interactions or enough time, records why, never doubles an active job and
does not re-trigger in a loop after a triggered job ended unpublished. Real SQLite stores and a
real registry in tmp; a fake clock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.artifact import ModelArrays, ModelRegistry
from contract.jobspec import TRAIN_CONFIG_KEY, job_params, train_config_for_job
from store.feedback import FeedbackStore, Interaction
from store.jobs import JobStore
from worker.loop import serve_forever
from worker.scheduler import RetrainScheduler
from worker.settings import WorkerSettings


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPECREC_"):
            monkeypatch.delenv(name)


def settings_for(home: Path, **kw: Any) -> WorkerSettings:
    return WorkerSettings(home=home, poll_interval_s=1.0, **kw)


def publish_model(s: WorkerSettings, max_seq: int | None = None) -> str:
    rng = np.random.default_rng(0)
    arrays = ModelArrays.build(
        rng.normal(size=(3, 4)),
        rng.normal(size=(5, 4)),
        ["u0", "u1", "u2"],
        ["i0", "i1", "i2", "i3", "i4"],
        (np.array([0, 1, 2]), np.array([0, 1, 2])),
    )
    extra = None if max_seq is None else {"ingested": {"rows": max_seq, "max_seq": max_seq}}
    return ModelRegistry(s.registry_root).publish(arrays, config={}, extra=extra)


def ingest(s: WorkerSettings, n: int) -> int:
    return FeedbackStore(s.feedback_db).append(
        [Interaction(f"u{k}", f"i{k}", 1.0) for k in range(n)]
    )


def scheduler(s: WorkerSettings, clock: Clock) -> tuple[RetrainScheduler, JobStore]:
    store = JobStore(s.jobs_db)
    return RetrainScheduler(s, store, clock), store


def test_off_by_default_never_queues(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    assert s.retrain_after_interactions == 0 and s.retrain_after_s == 0
    publish_model(s)
    ingest(s, 500)
    clock = Clock()
    sched, store = scheduler(s, clock)
    for _ in range(3):
        clock.advance(10 * 365 * 86400)  # ten years old, 500 new rows: still nothing
        assert sched.maybe_enqueue() is None
    assert store.recent() == []


def test_interactions_threshold_queues_one_job_recording_the_trigger(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=10)
    version = publish_model(s, max_seq=4)
    ingest(s, 14)  # seq 1..14: 10 beyond the model's max_seq 4
    clock = Clock()
    sched, store = scheduler(s, clock)
    job = sched.maybe_enqueue()
    assert job is not None
    assert job.params["trigger"] == {
        "kind": "interactions",
        "new_rows": 10,
        "threshold": 10,
        "max_seq": 14,
        "model_version": version,
    }
    # the API's params shape on the worker's default dataset, with the default config
    assert job.params["dataset"] == "default"
    assert job.params[TRAIN_CONFIG_KEY] == train_config_for_job({}).to_dict()
    assert {k: v for k, v in job.params.items() if k != "trigger"} == job_params(
        {"dataset": "default"}
    )
    clock.advance(1.0)
    assert sched.maybe_enqueue() is None  # the job is queued: enqueue refuses a second
    assert [j.id for j in store.recent()] == [job.id]


def test_below_threshold_queues_nothing(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=10)
    publish_model(s, max_seq=5)
    ingest(s, 14)  # 9 new
    sched, store = scheduler(s, Clock())
    assert sched.maybe_enqueue() is None
    assert store.recent() == []


def test_a_model_without_ingested_counts_from_zero(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=10)
    publish_model(s)  # the bootstrap model: no "ingested"
    ingest(s, 10)
    sched, _ = scheduler(s, Clock())
    job = sched.maybe_enqueue()
    assert job is not None and job.params["trigger"]["new_rows"] == 10


def test_an_active_job_is_not_doubled(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=10, retrain_after_s=60)
    publish_model(s)
    ingest(s, 50)
    clock = Clock()
    sched, store = scheduler(s, clock)
    api_job, _ = store.enqueue(job_params({"force": False}))
    clock.advance(3600)
    assert sched.maybe_enqueue() is None
    store.claim("w")  # running now
    clock.advance(1.0)
    assert sched.maybe_enqueue() is None
    assert [j.id for j in store.recent()] == [api_job.id]


def test_time_threshold_with_an_old_model_queues_one_job(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_s=3600)
    version = publish_model(s)
    created = ModelRegistry(s.registry_root).manifest(version).created_unix
    clock = Clock()
    sched, store = scheduler(s, clock)
    assert sched.maybe_enqueue() is None  # fresh
    clock.t = created + 3600.5
    job = sched.maybe_enqueue()
    assert job is not None
    trigger = job.params["trigger"]
    assert trigger["kind"] == "schedule" and trigger["threshold_s"] == 3600
    assert trigger["age_s"] == pytest.approx(3600.5, abs=1e-3)
    assert trigger["model_version"] == version
    clock.advance(1.0)
    assert sched.maybe_enqueue() is None
    assert len(store.recent()) == 1


def test_no_model_no_time_trigger(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_s=1)
    clock = Clock()
    sched, store = scheduler(s, clock)
    clock.advance(10**6)
    assert sched.maybe_enqueue() is None
    assert store.recent() == []


def test_checks_at_most_once_per_poll_interval(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=5)
    publish_model(s)
    clock = Clock()
    sched, store = scheduler(s, clock)
    assert sched.maybe_enqueue() is None  # checked: nothing new
    ingest(s, 5)
    clock.advance(0.5)
    assert sched.maybe_enqueue() is None  # not checked again yet
    clock.advance(0.5)
    assert sched.maybe_enqueue() is not None


def test_after_a_rejected_triggered_job_no_immediate_retrigger(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=10)
    publish_model(s)
    ingest(s, 12)
    clock = Clock()
    sched, store = scheduler(s, clock)
    first = sched.maybe_enqueue()
    assert first is not None
    claimed = store.claim("w")
    assert claimed is not None and claimed.id == first.id
    store.finish(first.id, "w", "rejected", error="quality gate failed: recall")

    hold = sched.retry_after_s(1)
    assert hold == 60.0  # 60 x the 1 s poll interval
    for _ in range(5):  # same rows, a few polls later: held back
        clock.advance(1.0)
        assert sched.maybe_enqueue() is None
    ingest(s, 9)  # fewer than another threshold beyond the rows the rejected job had
    clock.advance(1.0)
    assert sched.maybe_enqueue() is None
    assert [j.id for j in store.recent()] == [first.id]

    clock.t = first.created_at + hold + 10  # the hold is over: the same trigger fires again
    second = sched.maybe_enqueue()
    assert second is not None and second.params["trigger"]["new_rows"] == 21
    store.claim("w")
    store.finish(second.id, "w", "failed", error="boom")
    assert sched.retry_after_s(2) == 120.0  # doubles with each unpublished job in a row
    clock.advance(1.0)
    # more than one hold after the second job ended, less than the doubled one
    assert hold < clock.t - store.get(second.id).finished_at < 2 * hold
    assert sched.maybe_enqueue() is None
    ingest(s, 10)  # a full threshold beyond what the failed job saw: triggers at once
    clock.advance(1.0)
    third = sched.maybe_enqueue()
    assert third is not None and third.params["trigger"]["max_seq"] == 31


def test_after_a_rejected_scheduled_job_the_time_trigger_waits(tmp_path: Path) -> None:
    s = settings_for(tmp_path, retrain_after_s=10)
    version = publish_model(s)
    created = ModelRegistry(s.registry_root).manifest(version).created_unix
    clock = Clock()
    clock.t = created + 10.5
    sched, store = scheduler(s, clock)
    job = sched.maybe_enqueue()
    assert job is not None and job.params["trigger"]["kind"] == "schedule"
    store.claim("w")
    store.finish(job.id, "w", "rejected", error="quality gate failed")
    finished = store.get(job.id).finished_at
    clock.t = max(clock.t, finished) + 1
    assert sched.maybe_enqueue() is None
    assert sched.retry_after_s(1) == 60.0  # max(10 s, 60 polls of 1 s)
    clock.t = finished + 50
    assert sched.maybe_enqueue() is None
    clock.t = finished + 61
    assert sched.maybe_enqueue() is not None


def test_serve_forever_queues_and_claims_the_triggered_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_for(tmp_path, retrain_after_interactions=3)
    publish_model(s)
    ingest(s, 3)
    ran: list[dict[str, Any]] = []
    stop = threading.Event()

    def fake_run(settings, store, job, worker_id, stop_event):  # type: ignore[no-untyped-def]
        ran.append(job.params)
        store.finish(job.id, worker_id, "rejected", error="test")
        stop.set()
        return 0

    monkeypatch.setattr("worker.loop.run_job_isolated", fake_run)
    t = threading.Thread(target=serve_forever, args=(s, stop), daemon=True)
    t.start()
    t.join(timeout=10)
    stop.set()
    assert not t.is_alive()
    assert len(ran) == 1 and ran[0]["trigger"]["kind"] == "interactions"


def test_the_scheduler_opens_the_interaction_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls read the log's high-water mark through one store, not one per poll."""
    from store.db import SQLiteDatabase

    s = settings_for(tmp_path, retrain_after_interactions=1000)
    publish_model(s)
    ingest(s, 5)
    log = FeedbackStore(s.feedback_db)  # another process's writer, opened before counting
    clock = Clock()
    sched, _ = scheduler(s, clock)
    opened: list[str] = []
    real = SQLiteDatabase.migrate

    def counting(self: SQLiteDatabase, store: str, steps: Any) -> None:
        opened.append(store)
        real(self, store, steps)

    monkeypatch.setattr(SQLiteDatabase, "migrate", counting)
    for n in range(4):
        clock.advance(s.poll_interval_s)
        assert sched.maybe_enqueue() is None
        assert sched.feedback().max_seq() == 5 + n
        log.append([Interaction("u", "i", 1.0)])  # new rows: seen through the same store
    assert opened == ["interactions"]
