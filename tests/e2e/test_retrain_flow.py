"""Retraining end to end: ingest -> POST /retrain -> worker -> gate -> publish -> hot swap.

Real SQLite queue, real trainer on the synthetic default (a few epochs), a real worker (a
thread, or a subprocess that the fault test kills), and the app through an httpx client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract.artifact import ModelArrays, ModelRegistry
from service.app import create_app
from service.settings import Settings
from store.jobs import JobStore
from trainer.synthetic import write_dataset
from worker.job import run_job
from worker.loop import serve_forever
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_dataset(tmp_path / "data" / "default")
    return tmp_path


def api_settings(home: Path) -> Settings:
    return Settings(home=home, admin_token=TOKEN, watch_interval_s=0.05, heartbeat_timeout_s=6)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_until_ended(c: TestClient, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll GET /retrain/{job_id} until the job is in a final state; return its body."""

    def ended() -> dict[str, Any] | None:
        job = c.get(f"/retrain/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "rejected", "cancelled") else None

    return wait_for(ended, timeout, f"retrain job {job_id} to end")


@pytest.fixture
def worker_thread(home: Path) -> Iterator[None]:
    stop = threading.Event()
    settings = WorkerSettings(home=home, poll_interval_s=0.1, heartbeat_interval_s=0.3)
    t = threading.Thread(target=serve_forever, args=(settings, stop), daemon=True)
    t.start()
    yield
    stop.set()
    t.join(timeout=120)


def test_new_user_becomes_servable_after_retrain(home: Path, worker_thread: None) -> None:
    new_items = [f"item_{i}" for i in (5, 17, 42, 99, 123, 256, 511, 777, 1000, 1500)]
    rows = [
        {"user_id": "brand_new_user", "item_id": it, "timestamp": 1.9e9 + n}
        for n, it in enumerate(new_items)
    ]
    with TestClient(create_app(api_settings(home))) as c:
        assert c.get("/readyz").status_code == 503  # nothing published yet
        assert c.post("/interactions", json={"interactions": rows}, headers=AUTH).json() == {
            "accepted": 10,
            "total": 10,
        }
        job_id = c.post("/retrain", json={"epochs": 3}, headers=AUTH).json()["job_id"]
    # the API restarts while the job is queued or running; the job goes on
    with TestClient(create_app(api_settings(home))) as c:
        job = wait_until_ended(c, job_id, timeout=240)
        assert job["state"] == "succeeded", job.get("error")
        assert job["progress"]["epoch"] == 3 and job["progress"]["epochs"] == 3
        assert job["result"]["gate"]["passed"] is True
        assert job["result"]["gate"]["serving_value"] is None  # first model: spectrum only
        version = job["model_version"]
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, "the model to load")
        r = c.get("/recommend/brand_new_user?k=20")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == version
        assert len(body["items"]) == 20
        assert not (home / "snapshots").exists()  # the training set was built in memory
        assert job["result"]["ingested"] == {"rows": 10, "max_seq": 10}
        # 8 of the 10 ingested rows are the user's training items, the 2 latest are held out
        # for the evaluation run; the published model was refitted on all 10, all seen
        assert job["result"]["trained_on"]["pairs"] == "all"
        assert not set(new_items) & {it["item_id"] for it in body["items"]}


def _job(store: JobStore, params: dict[str, Any]) -> str:
    job, created = store.enqueue(params)
    assert created
    return job.id


def test_gate_rejects_collapse_and_force_publishes(home: Path) -> None:
    settings = WorkerSettings(home=home)
    store = JobStore(settings.jobs_db)
    params = {"objective": "align", "epochs": 6}
    job_id = _job(store, params)
    run_job(settings, store, store.claim("w"), "w")
    job = store.get(job_id)
    assert job.state == "rejected", job
    gate = job.result["gate"]
    assert gate["erank_ratio"] < gate["thresholds"]["min_erank_ratio"] == 0.25
    assert f"normalised effective rank ratio {gate['erank_ratio']:.3f}" in job.error
    assert ModelRegistry(settings.registry_root).current() is None  # nothing published
    forced = _job(store, {**params, "force": True})
    run_job(settings, store, store.claim("w"), "w")
    job = store.get(forced)
    assert job.state == "succeeded" and job.result["forced"] is True
    assert ModelRegistry(settings.registry_root).current() == job.result["model_version"]


def _publish_random_model(home: Path) -> str:
    """A serving model over the synthetic ids (random, so any trained model beats it)."""
    rng = np.random.default_rng(0)
    arrays = ModelArrays.build(
        rng.normal(size=(3000, 16)),
        rng.normal(size=(2000, 16)),
        [f"user_{u}" for u in range(3000)],
        [f"item_{i}" for i in range(2000)],
        (np.array([0]), np.array([0])),
    )
    return ModelRegistry(home / "models").publish(arrays, config={"kind": "random"})


def _start_worker(home: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SPECREC_HOME": str(home),
        "SPECREC_HEARTBEAT_INTERVAL_S": "0.3",
        "SPECREC_HEARTBEAT_TIMEOUT_S": "6",
        "SPECREC_POLL_INTERVAL_S": "0.2",
        # no retry: the killed worker's job must end failed (retries: tests/worker)
        "SPECREC_JOB_RETRIES": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "--no-bootstrap"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_killed_worker_fails_the_job_and_service_keeps_serving(home: Path) -> None:
    old_version = _publish_random_model(home)
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()
    worker = _start_worker(home)
    try:
        with TestClient(create_app(api_settings(home))) as c:

            def hammer() -> None:
                while not stop.is_set():
                    r = c.get("/recommend/user_7?k=20")
                    if r.status_code != 200 or len(r.json()["items"]) != 20:
                        failures.append(r.text)
                    else:
                        served.append(r.json()["model_version"])
                    time.sleep(0.01)

            load = threading.Thread(target=hammer)
            load.start()
            try:
                job_id = c.post("/retrain", json={"epochs": 500}, headers=AUTH).json()["job_id"]
                wait_for(
                    lambda: (
                        (c.get(f"/retrain/{job_id}").json().get("progress") or {}).get("epoch", 0)
                        >= 1
                    ),
                    timeout=120,
                    what="training to start",
                )
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
                job = wait_for(
                    lambda: (j := c.get(f"/retrain/{job_id}").json())["state"] == "failed" and j,
                    timeout=30,
                    what="the job to be failed after the heartbeat timeout",
                )
                assert "no heartbeat for more than 6 s" in job["error"]
                assert c.get("/readyz").status_code == 200
                # a later retrain works with a new worker
                worker = _start_worker(home)
                r = c.post("/retrain", json={"epochs": 2}, headers=AUTH)
                assert r.status_code == 202, r.text
                second = r.json()["job_id"]
                job = wait_until_ended(c, second, timeout=180)
                assert job["state"] == "succeeded", job.get("error")
                assert job["result"]["gate"]["serving_version"] == old_version
                new_version = job["model_version"]
                wait_for(
                    lambda: c.get("/recommend/user_7?k=20").json()["model_version"] == new_version,
                    30,
                    "the hot swap",
                )
            finally:
                stop.set()
                load.join()
    finally:
        worker.kill()
        worker.wait(timeout=30)
    assert failures == []
    assert served.count(old_version) > 10  # it kept answering with the old model meanwhile


def test_running_job_can_be_cancelled(home: Path, worker_thread: None) -> None:
    with TestClient(create_app(api_settings(home))) as c:
        job_id = c.post("/retrain", json={"epochs": 500}, headers=AUTH).json()["job_id"]
        wait_for(
            lambda: c.get(f"/retrain/{job_id}").json()["state"] == "running",
            timeout=60,
            what="the job to start",
        )
        r = c.post(f"/retrain/{job_id}/cancel", headers=AUTH)
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        job = wait_for(
            lambda: (j := c.get(f"/retrain/{job_id}").json())["state"] == "cancelled" and j,
            timeout=60,
            what="the worker to stop at the next epoch",
        )
        assert job["error"] == "cancelled on request"
        assert ModelRegistry(home / "models").current() is None  # nothing was published
        states = [j["state"] for j in c.get("/retrain").json()["jobs"]]
        assert states == ["cancelled"]  # nothing active: the next POST /retrain may queue
