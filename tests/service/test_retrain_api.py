"""POST /retrain, GET /retrain[/{id}], cancel: auth, validation, one active job, persistence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contract.config import TrainConfig, dataset_config, default_synthetic_config
from contract.jobspec import job_refit, train_config_for_job
from service.app import create_app
from service.settings import Settings
from store.jobs import JobStore
from tests.service.modelkit import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:  # no model needed to queue jobs
        yield c


def test_retrain_requires_the_admin_token(api: TestClient) -> None:
    r = api.post("/retrain")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = api.post("/retrain", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = api.post("/retrain/" + "0" * 32 + "/cancel")
    assert r.status_code == 401


def test_retrain_refused_when_no_token_configured(tmp_path) -> None:
    with TestClient(create_app(Settings(home=tmp_path))) as c:
        r = c.post("/retrain", headers=AUTH)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "admin_disabled"
    assert "ADMIN_TOKEN" in r.json()["error"]["message"]


def test_queue_then_conflict_then_status_and_list(api: TestClient, settings: Settings) -> None:
    r = api.post("/retrain", headers=AUTH, json={"epochs": 3, "objective": "directspec+"})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert r.json() == {
        "job_id": job_id,
        "status_url": f"/retrain/{job_id}",
        "state": "queued",
        "train_config": default_synthetic_config(epochs=3).to_dict(),
    }
    again = api.post("/retrain", headers=AUTH)
    assert again.status_code == 409
    err = again.json()["error"]
    assert err["code"] == "job_active" and err["details"]["job_id"] == job_id
    status = api.get(f"/retrain/{job_id}").json()
    assert status["state"] == "queued"
    assert status["params"] == {
        "epochs": 3,
        "objective": "directspec+",
        "hyperparameters": {},
        "force": False,
    }
    assert status["train_config"] == r.json()["train_config"]
    assert status["model_version"] is None and status["started_at"] is None
    listed = api.get("/retrain").json()["jobs"]
    assert [j["job_id"] for j in listed] == [job_id]
    # the worker side sees exactly this job
    claimed = JobStore(settings.jobs_db).claim("test-worker")
    assert claimed is not None and claimed.id == job_id and claimed.params["epochs"] == 3
    assert api.get(f"/retrain/{job_id}").json()["state"] == "running"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"objective": "bpr", "encoder": "lightgcn", "epochs": 4},
        {
            "objective": "directau",
            "epochs": 2.0,
            "hyperparameters": {"lr": 5, "dim": 16.0, "ks": [10, 20, 50], "tau0": None},
        },
        {"hyperparameters": {"adaptive_tau": True, "tau": 0.6, "epochs": 9}},
    ],
)
def test_the_job_stores_the_config_it_trains_with(
    api: TestClient, settings: Settings, body: dict
) -> None:
    """One derivation: the config resolved at POST time is stored with the job, and it is
    train_config_for_job of the request; the worker reads it back with from_dict."""
    r = api.post("/retrain", headers=AUTH, json=body)
    assert r.status_code == 202, r.text
    job = JobStore(settings.jobs_db).get(r.json()["job_id"])
    assert job is not None
    stored = TrainConfig.from_dict(job.params["train_config"])
    assert stored == train_config_for_job(body)
    assert stored.device is None  # the worker's to choose
    assert job.params["train_config"] == stored.to_dict() == r.json()["train_config"]
    view = api.get(f"/retrain/{job.id}").json()
    assert view["train_config"] == r.json()["train_config"]
    assert "train_config" not in view["params"]


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"lr": -1}, "lr"),
        ({"dim": 0}, "dim"),
        ({"dim": 2.5}, "dim"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"sampler": "pairs"}, "sampler"),
        ({"ks": [10, 20, 0]}, "ks"),
        ({"epochs": "3"}, "epochs"),
        ({"adaptive_tau": True, "tau": 0.5}, "tau0"),  # TrainConfig's cross-field rule
        ({"sampler": "user", "objective_is": "bpr"}, "objective_is"),
    ],
)
def test_bad_hyperparameters_are_422_naming_the_field(
    api: TestClient, settings: Settings, hyperparameters: dict, field: str
) -> None:
    r = api.post("/retrain", headers=AUTH, json={"hyperparameters": hyperparameters})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert JobStore(settings.jobs_db).recent() == []


def test_a_job_asks_for_its_processes(api: TestClient, settings: Settings) -> None:
    r = api.post("/retrain", headers=AUTH, json={"processes": 2, "epochs": 3})
    assert r.status_code == 202, r.text
    job = JobStore(settings.jobs_db).get(r.json()["job_id"])
    assert job is not None and job.params["processes"] == 2
    assert api.get(f"/retrain/{job.id}").json()["params"]["processes"] == 2


@pytest.mark.parametrize("refit", [False, True])
def test_a_job_says_whether_it_refits(api: TestClient, settings: Settings, refit: bool) -> None:
    r = api.post("/retrain", headers=AUTH, json={"refit": refit})
    assert r.status_code == 202, r.text
    job = JobStore(settings.jobs_db).get(r.json()["job_id"])
    assert job is not None and job.params["refit"] is refit
    assert job_refit(job.params, not refit) is refit  # the job's word over the worker's
    assert api.get(f"/retrain/{job.id}").json()["params"]["refit"] is refit


def test_bpr_with_the_user_sampler_is_422_naming_the_field(api: TestClient) -> None:
    body = {"objective": "bpr", "hyperparameters": {"sampler": "user"}}
    r = api.post("/retrain", headers=AUTH, json=body)
    assert r.status_code == 422
    assert "sampler: 'user' is not supported for bpr" in r.json()["error"]["message"]


def test_cancel_queued_job_frees_the_queue(api: TestClient) -> None:
    job_id = api.post("/retrain", headers=AUTH).json()["job_id"]
    r = api.post(f"/retrain/{job_id}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert api.post("/retrain", headers=AUTH).status_code == 202


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"epochs": 0}, "body.epochs"),
        ({"objective": "sgd"}, "body.objective"),
        ({"bogus": 1}, "body.bogus"),
        ({"hyperparameters": {"lr": -1}}, "lr"),
        ({"hyperparameters": {"not_a_field": 1}}, "not_a_field"),
        ({"hyperparameters": {"device": "cuda"}}, "set by the worker"),
        ({"dataset": "../etc"}, "body.dataset"),
        ({"dataset": "missing"}, "no dataset 'missing'"),
        ({"processes": 0}, "body.processes"),
        ({"processes": 65}, "body.processes"),
        ({"processes": "2"}, "body.processes"),
        ({"refit": "no"}, "body.refit"),
        ({"refit": 0}, "body.refit"),
    ],
)
def test_invalid_requests_are_422_and_queue_nothing(
    api: TestClient, settings: Settings, body: dict, fragment: str
) -> None:
    r = api.post("/retrain", headers=AUTH, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert fragment in r.json()["error"]["message"]
    assert JobStore(settings.jobs_db).recent() == []


def test_unknown_and_malformed_job_ids(api: TestClient) -> None:
    r = api.get("/retrain/" + "a" * 32)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_job"
    assert api.get("/retrain/not-a-job").status_code == 422


def test_two_concurrent_retrains_make_exactly_one_job(api: TestClient, settings: Settings) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def post() -> None:
        barrier.wait()
        statuses.append(api.post("/retrain", headers=AUTH).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202, 409]
    assert len(JobStore(settings.jobs_db).recent()) == 1


def test_queued_job_survives_an_api_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        job_id = first.post("/retrain", headers=AUTH).json()["job_id"]
    with TestClient(create_app(settings)) as second:
        assert second.get(f"/retrain/{job_id}").json()["state"] == "queued"
        assert second.post("/retrain", headers=AUTH).status_code == 409


def test_a_job_the_worker_queued_shows_its_trigger(api: TestClient, settings: Settings) -> None:
    from contract.jobspec import job_params

    trigger = {"kind": "interactions", "new_rows": 12, "threshold": 10, "max_seq": 12}
    job, _ = JobStore(settings.jobs_db).enqueue(job_params({"dataset": "default"}, trigger))
    status = api.get(f"/retrain/{job.id}").json()
    assert status["trigger"] == trigger
    assert status["params"] == {"dataset": "default"}  # neither trigger nor train_config
    assert status["train_config"] == train_config_for_job({}).to_dict()
    assert api.get("/retrain").json()["jobs"][0]["trigger"] == trigger
    api.post(f"/retrain/{job.id}/cancel", headers=AUTH)
    r = api.post("/retrain", headers=AUTH)  # an API job: no trigger
    assert r.status_code == 202
    assert api.get(r.json()["status_url"]).json()["trigger"] is None


def test_one_default_per_dataset_whatever_the_door(tmp_path: Path) -> None:
    """POST /retrain on a dataset trains what specrec-train trains on it (the one table,
    contract.config.DATASET_DEFAULTS): the synthetic default's short schedule for ``default``,
    the per-objective defaults for a real dataset, and SPECREC_DATASET when the job names none."""
    from trainer.cli import config_from_args, parse_args

    for name in ("default", "real"):
        (tmp_path / "data" / name).mkdir(parents=True)
    settings = Settings(home=tmp_path, admin_token=ADMIN_TOKEN, dataset="real")
    with TestClient(create_app(settings)) as c:

        def queued(body: dict) -> dict:
            r = c.post("/retrain", headers=AUTH, json=body)
            assert r.status_code == 202, r.text
            cancel = c.post(f"/retrain/{r.json()['job_id']}/cancel", headers=AUTH)
            assert cancel.json()["state"] == "cancelled"
            return r.json()["train_config"]

        for name in ("default", "real"):
            cli = config_from_args(parse_args(["--data", str(tmp_path / "data" / name)]))
            assert queued({"dataset": name}) == cli.to_dict() == dataset_config(name).to_dict()
        real = queued({})  # the configured dataset: "real"
        assert real == TrainConfig.defaults("directspec+", "mf").to_dict()
        assert (real["epochs"], real["lr"]) == (300, 180.0)
        assert queued({"dataset": "default"})["epochs"] == 10
        # the request's epochs, then hyperparameters.epochs on top (as documented)
        assert queued({"epochs": 3, "hyperparameters": {"epochs": 9}})["epochs"] == 9
        assert queued({"epochs": 3})["epochs"] == 3
