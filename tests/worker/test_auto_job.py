"""Retrain jobs of the spectral filter and "auto" (the validation winner), run by the worker
and served: the job record and the manifest say which won and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ModelRegistry
from contract.config import dataset_config
from contract.jobspec import job_params
from store.jobs import JobStore
from trainer.data import load_dataset
from trainer.select import select_by_validation
from worker.job import run_job
from worker.settings import WorkerSettings


def _run(home: Path, request: dict) -> tuple:
    settings = WorkerSettings(home=home, heartbeat_interval_s=0.2, checkpoint_every=0)
    store = JobStore(settings.jobs_db)
    job, _ = store.enqueue(job_params(request))
    run_job(settings, store, store.claim("w"), "w")
    return store.get(job.id), ModelRegistry(settings.registry_root).load()


def test_a_spectral_job_publishes_a_filter_model(worker_home: Path) -> None:
    job, model = _run(worker_home, {"objective": "spectral", "hyperparameters": {"spectral_k": 32}})
    assert job.state == "succeeded", job.error
    assert model.arrays.kind == "spectral" and model.arrays.dim == 32
    assert model.manifest.model.kind == "spectral" and model.manifest.model.spectral_k == 32
    assert job.result["gate"]["passed"] is True
    # the gate scored the filter, not its low-pass embeddings: the job's recall is the filter's
    assert job.result["gate"]["new_value"] == pytest.approx(job.result["metrics"]["recall@20"])
    # refit on every pair: the filter's matrix holds the test pairs too, and the lists skip them
    ds = load_dataset(worker_home / "data" / "default")
    assert len(model.arrays.filter_indices) == ds.n_train + ds.n_test
    assert model.manifest.trained_on is not None and model.manifest.trained_on.pairs == "all"
    a = model.arrays
    for user in range(0, ds.n_users, 37):
        listed = set(a.top_rows[user][a.top_rows[user] >= 0].tolist())
        assert not listed & set(a.seen(user).tolist())


def test_an_auto_job_publishes_the_validation_winner(worker_home: Path) -> None:
    request = {"objective": "auto", "hyperparameters": {"spectral_k": 32}}
    job, model = _run(worker_home, request)
    assert job.state == "succeeded", job.error
    selection = job.result["selection"]
    assert set(selection["validation"]) == {"directspec+", "spectral", "blend"}
    scores = selection["validation"]
    winner = max(scores, key=lambda o: scores[o])
    assert selection["winner"] == winner and winner in selection["reason"]
    assert model.manifest.selection == selection
    assert model.manifest.config.objective == winner
    kinds = {"spectral": "spectral", "blend": "blend", "directspec+": "embedding"}
    assert model.arrays.kind == kinds[winner]
    # the same choice and scores as selecting directly on the job's dataset
    ds = load_dataset(worker_home / "data" / "default")
    direct = select_by_validation(
        ds,
        [
            dataset_config("default", "directspec+", spectral_k=32),
            dataset_config("default", "spectral", spectral_k=32),
        ],
    )
    assert direct.winner.objective == winner
    np.testing.assert_allclose(
        [direct.scores[o] for o in sorted(scores)], [scores[o] for o in sorted(scores)]
    )


def test_a_blend_job_publishes_a_blend_in_one_process(worker_home: Path) -> None:
    request = {
        "objective": "blend",
        "epochs": 2,
        "processes": 2,  # the blend trains in one process whatever is asked
        "hyperparameters": {"blend_weight": 0.5, "spectral_k": 16},
    }
    job, model = _run(worker_home, request)
    assert job.state == "succeeded", job.error
    assert model.arrays.kind == "blend" and model.manifest.model.blend_weight == 0.5
    assert model.manifest.config.objective == "blend"
    training = model.manifest.training
    assert (
        training is not None
        and (training.to_dict().get("distributed") or {}).get("world_size", 1) == 1
    )
    assert job.result["gate"]["new_value"] == pytest.approx(job.result["metrics"]["recall@20"])
