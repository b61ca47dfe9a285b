"""Retrain jobs in 2 data-parallel ranks through the worker (real torchrun, gloo on CPU): a
loadable model whose manifest records the world size, progress and cancellation as for one
process, and a killed or hung rank failing the job with its cause within the timeout."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from contract.artifact import ModelRegistry
from store.jobs import JobStore
from worker.job import run_job
from worker.ranks import crash_detail, failure_summary
from worker.settings import WorkerSettings


@pytest.fixture
def settings(worker_home: Path) -> WorkerSettings:
    return WorkerSettings(home=worker_home, heartbeat_interval_s=0.2, dist_timeout_s=8.0)


def rank_pids(home: Path) -> dict[int, int]:
    """{rank: pid} of the worker.ranks processes working under `home`."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker.ranks" in cmd and any(str(home).encode() in c for c in cmd):
            ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
            if ranks:
                out[int(ranks[0])] = int(entry.name)
    return out


def start_job(settings: WorkerSettings, params: dict) -> tuple[JobStore, str, threading.Thread]:
    store = JobStore(settings.jobs_db)
    job, created = store.enqueue(params)
    assert created
    claimed = store.claim("w")
    thread = threading.Thread(target=run_job, args=(settings, store, claimed, "w"), daemon=True)
    thread.start()
    return store, job.id, thread


def wait_for_training(store: JobStore, job_id: str, settings: WorkerSettings) -> dict[int, int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = store.get(job_id)
        assert job.state == "running", (job.state, job.error)
        pids = rank_pids(settings.home)
        if (job.progress or {}).get("epoch", 0) >= 1 and len(pids) == 2:
            return pids
        time.sleep(0.1)
    raise AssertionError("training never started")


def test_a_two_rank_job_publishes_a_model_that_records_its_world(settings):
    store, job_id, thread = start_job(settings, {"epochs": 3, "force": True, "processes": 2})
    thread.join(timeout=120)
    job = store.get(job_id)
    assert job.state == "succeeded", job.error
    loaded = ModelRegistry(settings.registry_root).load()
    assert loaded.version == job.result["model_version"]
    assert loaded.arrays.user_emb.shape == (300, 64)
    training = loaded.manifest.training.to_dict()
    assert training["distributed"] == {"world_size": 2, "backend": "gloo", "devices": ["cpu"] * 2}
    assert training["epochs_run"] == 3
    assert job.progress["epoch"] == 3 and job.progress["epochs"] == 3  # rank 0's progress
    assert job.result["metrics"] == loaded.manifest.metrics
    assert not (settings.home / "tmp" / f"job-{job_id}").exists()  # work directory removed


def test_cancelling_a_two_rank_job_stops_every_rank(settings):
    store, job_id, thread = start_job(settings, {"epochs": 2000, "processes": 2})
    pids = wait_for_training(store, job_id, settings)
    store.cancel(job_id)
    thread.join(timeout=60)
    job = store.get(job_id)
    assert job.state == "cancelled", (job.state, job.error)
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids.values())


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        (signal.SIGKILL, "rank 1 (pid {pid}) killed by signal 9 (SIGKILL)"),
        # what the rank's faulthandler printed: where it was
        (signal.SIGABRT, "rank 1 (pid {pid}) killed by signal 6 (SIGABRT): Fatal Python error"),
        # a hung rank: the other one's collective times out after dist_timeout_s
        (signal.SIGSTOP, "rank 0"),
    ],
)
def test_a_dead_or_hung_rank_fails_the_job_with_its_cause_within_the_timeout(
    settings, sig, expected
):
    store, job_id, thread = start_job(settings, {"epochs": 2000, "processes": 2})
    pids = wait_for_training(store, job_id, settings)
    t0 = time.monotonic()
    os.kill(pids[1], sig)
    try:
        thread.join(timeout=settings.dist_timeout_s + 60)
        took = time.monotonic() - t0
    finally:
        for pid in pids.values():  # nothing left behind, whatever happened
            _kill(pid)
    job = store.get(job_id)
    assert job.state == "failed", (job.state, job.error)
    assert job.error.startswith("RanksFailed: 2-rank training failed: "), job.error
    assert expected.format(pid=pids[1]) in job.error
    if sig == signal.SIGSTOP:  # rank 0's collective timed out
        assert "another rank stopped answering for 8 s" in job.error, job.error
    if sig == signal.SIGABRT:
        assert re.search(r"Aborted \(File \"[^\"]+\.py\", line \d+", job.error), job.error
    kept = settings.home / "logs" / f"job-{job_id}-ranks.log"
    assert job.error.endswith(f"; the ranks' output is in {kept}")
    assert "Root Cause" in kept.read_text()
    # a stopped rank ignores torchrun's SIGTERM: torchrun kills it after its 30 s grace
    assert took < settings.dist_timeout_s + 45
    assert not any(_alive(pid) for pid in pids.values())


def test_failure_summary_names_the_root_cause():
    log = """
[W] something
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_01:38:18
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 4242)
  error_file: /tmp/x/error.json
  traceback : Traceback (most recent call last):
    File "x.py", line 3, in f
      raise RuntimeError("boom")
  RuntimeError: [gloo] Timed out waiting 8000ms for recv operation
=======================================================
"""
    assert failure_summary(log) == (
        "rank 1 (pid 4242) exited with status 1: "
        "RuntimeError: [gloo] Timed out waiting 8000ms for recv operation"
    )
    assert failure_summary("a\nlast line\n") == "last line"


# torchrun 2.13 after rank 1 was SIGKILLed: it stopped rank 0 with SIGTERM while rank 0 was
# reporting its "Connection closed by peer"; rank 0's error file has the earlier second
TIE = """
W1204 04:25:14.516000 29991 api.py:1028] Sending process 4241 closing signal SIGTERM
E1204 04:25:14.615000 29991 api.py:1002] failed (exitcode: -9) local_rank: 1 (pid: 4242)
Failures:
[1]:
  time      : 2026-12-04_04:25:14
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_04:25:13
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 4241)  (SIGTERM)
  error_file: /tmp/x/attempt_0/0/error.json
  traceback : Traceback (most recent call last):
      work.wait()
  RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:934.
============================================================
"""


def test_the_root_cause_is_a_rank_that_torchrun_did_not_stop_itself():
    assert failure_summary(TIE) == "rank 1 (pid 4242) killed by signal 9 (SIGKILL)"
    # without torchrun's own "closing signal" line, its root cause stands
    untouched = TIE.replace("Sending process 4241 closing signal SIGTERM", "")
    assert failure_summary(untouched).startswith("rank 0 (pid 4241) killed by signal 15")


def test_a_crashed_rank_says_what_ended_it():
    aborted = """[rank1]: step 3
terminate called after throwing an instance of 'gloo::EnforceNotMet'
  what():  [enforce fail at pair.cc:446] op.preamble.length <= op.nbytes. 80 vs 40
Fatal Python error: Aborted

Thread 0x00007f (most recent call first):
  File "/x/threading.py", line 331 in wait

Current thread 0x00007e (most recent call first):
  File "/x/trainer/distributed.py", line 210 in all_gather
"""
    assert crash_detail(aborted) == (
        "terminate called after throwing an instance of 'gloo::EnforceNotMet' "
        "what():  [enforce fail at pair.cc:446] op.preamble.length <= op.nbytes. 80 vs 40"
    )
    python_only = aborted.split("terminate", 1)[0] + aborted.split("40\n", 1)[1]
    assert crash_detail(python_only) == (
        'Fatal Python error: Aborted (File "/x/trainer/distributed.py", line 210 in all_gather)'
    )
    assert crash_detail("nothing to see\n") == ""
    log = TIE.replace("-9 (pid: 4242)  (SIGKILL)", "-6 (pid: 4242)  (SIGABRT)")
    assert failure_summary(log, lambda rank: aborted if rank == 1 else "") == (
        "rank 1 (pid 4242) killed by signal 6 (SIGABRT): " + crash_detail(aborted)
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
