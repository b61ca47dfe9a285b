"""A retrain job whose training process is SIGKILLed mid-training: retried from its last
checkpoint (SPECREC_JOB_RETRIES, default 1), it publishes the model an uninterrupted run
trains, and its record shows both attempts and the epoch the second resumed from; with
SPECREC_JOB_RETRIES=0 it fails as it always did. The worker loop (serve_forever) drives it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ModelRegistry
from store.jobs import Job, JobStore
from trainer.checkpoint import list_checkpoints
from trainer.refit import evaluate_then_refit
from trainer.train import fit
from worker.job import checkpoint_dir, job_workdir
from worker.jobconfig import job_train_config
from worker.loop import serve_forever
from worker.settings import WorkerSettings
from worker.trainset import training_set

PARAMS = {"epochs": 8, "force": True, "hyperparameters": {"eval_every": 4}}


class Killer(threading.Thread):
    """SIGKILLs the job's training process once its epoch-`epoch` checkpoint exists; records
    the checkpoint epochs present just after the kill."""

    def __init__(self, ckpt_dir: Path, epoch: int = 2) -> None:
        super().__init__(daemon=True)
        self.ckpt_dir, self.epoch = ckpt_dir, epoch
        self.killed_pid: int | None = None
        self.epochs_left: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not self.done.is_set():
            if any(e >= self.epoch for e, _ in list_checkpoints(self.ckpt_dir)):
                jobs = [
                    p for p in multiprocessing.active_children() if p.name.startswith("specrec-job")
                ]
                if jobs:
                    os.kill(jobs[0].pid, signal.SIGKILL)
                    self.killed_pid = jobs[0].pid
                    jobs[0].join(timeout=30)
                    self.epochs_left = [e for e, _ in list_checkpoints(self.ckpt_dir)]
                    return
            time.sleep(0.005)


def _run_worker(settings: WorkerSettings, store: JobStore, job_id: str, killer: Killer) -> Job:
    stop = threading.Event()
    worker = threading.Thread(target=serve_forever, args=(settings, stop), daemon=True)
    killer.start()
    worker.start()
    try:
        deadline = time.monotonic() + 300
        while (job := store.get(job_id)).state in ("queued", "running"):
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.1)
        return job
    finally:
        killer.done.set()
        stop.set()
        worker.join(timeout=60)


def test_a_killed_job_resumes_from_its_checkpoint_and_publishes_the_uninterrupted_model(
    worker_home: Path,
) -> None:
    settings = WorkerSettings(home=worker_home, heartbeat_interval_s=0.2, poll_interval_s=0.1)
    assert settings.job_retries == 1 and settings.checkpoint_every == 1  # the defaults
    store = JobStore(settings.jobs_db)
    queued, _ = store.enqueue(PARAMS)
    killer = Killer(checkpoint_dir(settings, queued.id))
    job = _run_worker(settings, store, queued.id, killer)

    assert killer.killed_pid is not None
    assert job.state == "succeeded", job.error
    assert job.max_attempts == 2 and len(job.attempts) == 2
    first, second = job.attempts
    assert first.error.startswith(f"training process {killer.killed_pid} killed by signal 9")
    assert first.resumed_from is None
    # the second attempt resumed from the newest checkpoint the killed one left
    assert 2 <= second.resumed_from == max(killer.epochs_left) < PARAMS["epochs"]
    assert second.error is None and second.ended_at is not None
    assert not job_workdir(settings, job.id).exists()  # checkpoints gone with the job

    loaded = ModelRegistry(settings.registry_root).load()
    assert loaded.manifest.version == job.result["model_version"]
    training = loaded.manifest.training
    assert training is not None and training.to_dict()["resumed_from"] == second.resumed_from
    # bit for bit what one uninterrupted run of the job trains (evaluation run, then refit)
    ds, _ = training_set(settings, job)
    whole = evaluate_then_refit(ds, job_train_config(job, settings.device), fit)
    assert whole.refitted
    assert np.array_equal(loaded.arrays.user_emb, whole.model.user_emb)
    assert np.array_equal(loaded.arrays.item_emb, whole.model.item_emb)
    history = training.history
    assert [h["epoch"] for h in history] == [4, 8]
    assert [h["loss"] for h in history] == [h["loss"] for h in whole.evaluation.history]


def test_with_no_retries_the_killed_job_fails_as_before(
    worker_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECREC_JOB_RETRIES", "0")
    settings = WorkerSettings(home=worker_home, heartbeat_interval_s=0.2, poll_interval_s=0.1)
    assert settings.job_retries == 0
    store = JobStore(settings.jobs_db)
    queued, _ = store.enqueue(PARAMS)
    killer = Killer(checkpoint_dir(settings, queued.id))
    job = _run_worker(settings, store, queued.id, killer)

    assert job.state == "failed"
    assert job.error == (
        f"training process {killer.killed_pid} killed by signal 9 (SIGKILL) before the job "
        "finished (out of memory? the kernel's OOM killer sends SIGKILL)"
    )
    assert job.max_attempts == 1 and len(job.attempts) == 1
    assert job.attempts[0].error == job.error
    assert not job_workdir(settings, job.id).exists()
    assert ModelRegistry(settings.registry_root).current() is None


def test_a_dead_rank_queues_the_job_again_keeping_its_checkpoints(
    worker_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RanksFailed (a rank of a data-parallel job died) ends the attempt like a dead job
    process: queued again with its checkpoints (the ranks' own files removed), and failed
    once its attempts are spent. The retry trains on the first attempt's rows, in as many
    ranks, whatever was ingested and whatever the next worker's SPECREC_TRAIN_PROCESSES."""
    import worker.ranks
    from store.feedback import FeedbackStore, Interaction
    from worker.job import run_job

    settings = WorkerSettings(home=worker_home, heartbeat_interval_s=0.2, train_processes=2)
    store = JobStore(settings.jobs_db)
    feedback = FeedbackStore(settings.feedback_db)
    feedback.append([Interaction("new_user", "item_1", 1.0)])
    queued, _ = store.enqueue(PARAMS)
    ckpt = checkpoint_dir(settings, queued.id)
    seen: list[tuple[int, int]] = []

    def rank_dies(ds, cfg, nproc, workdir, **kwargs):
        assert kwargs["checkpoint"].directory == ckpt and kwargs["checkpoint"].resume
        seen.append((nproc, ds.n_train))
        (workdir / "dataset.pkl").write_bytes(b"ranks' file")
        (ckpt / "epoch-000003.pt").write_bytes(b"a checkpoint")
        raise worker.ranks.RanksFailed("2-rank training failed: rank 1 killed by signal 9")

    monkeypatch.setattr(worker.ranks, "run_ranks", rank_dies)
    run_job(settings, store, store.claim("w", max_attempts=2), "w")
    job = store.get(queued.id)
    assert job.state == "queued"
    assert job.attempts[0].error == "RanksFailed: 2-rank training failed: rank 1 killed by signal 9"
    assert sorted(p.name for p in job_workdir(settings, job.id).iterdir()) == ["checkpoints"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-000003.pt", "trainset.json"]

    feedback.append([Interaction("newer_user", "item_2", 2.0)])
    other_worker = settings.model_copy(update={"train_processes": 3})
    run_job(other_worker, store, store.claim("w", max_attempts=2), "w")
    job = store.get(queued.id)
    assert job.state == "failed" and job.error.startswith("RanksFailed: 2-rank training failed")
    assert seen[0] == seen[1] and seen[0][0] == 2
    assert [a.resumed_from for a in job.attempts] == [None, 3]
    assert not job_workdir(settings, job.id).exists()


def test_a_starting_worker_removes_the_work_directories_of_ended_jobs(worker_home: Path) -> None:
    from worker.orphans import remove_ended_workdirs

    settings = WorkerSettings(home=worker_home)
    store = JobStore(settings.jobs_db)
    ended, _ = store.enqueue({}, unique=False)
    store.claim("gone")
    store.finish(ended.id, "gone", "failed", error="reaped")
    waiting, _ = store.enqueue({}, unique=False)
    for job_id in (ended.id, waiting.id, "unknown"):
        (checkpoint_dir(settings, job_id)).mkdir(parents=True)
    assert sorted(remove_ended_workdirs(settings, store)) == sorted([ended.id, "unknown"])
    assert [p.name for p in (worker_home / "tmp").iterdir()] == [f"job-{waiting.id}"]
