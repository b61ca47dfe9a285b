"""The settings both processes read are one definition: the API and the worker see the same
value for every shared variable, and the gate and index groups validate on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from contract.settings import GateSettings, HomeSettings
from service.settings import IndexSettings, Settings
from worker.settings import WorkerSettings

SHARED = {
    "SPECREC_HOME": ("/srv/specrec", "home", Path("/srv/specrec")),
    "SPECREC_MODELS_DIR": ("/models", "models_dir", Path("/models")),
    "SPECREC_KEEP_VERSIONS": ("7", "keep_versions", 7),
    "SPECREC_DATASET": ("gowalla", "dataset", "gowalla"),
    "SPECREC_HEARTBEAT_TIMEOUT_S": ("12.5", "heartbeat_timeout_s", 12.5),
    "SPECREC_DATABASE_URL": (
        "postgresql://u:pw@db/specrec",
        "database_url",
        "postgresql://u:pw@db/specrec",
    ),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SPECREC_"):
            monkeypatch.delenv(name)


def test_every_shared_setting_reads_the_same_in_both_processes(monkeypatch):
    shared = set(HomeSettings.model_fields)
    assert shared == {field for _, field, _ in SHARED.values()}  # the table covers them all
    for env, (raw, _, _) in SHARED.items():
        monkeypatch.setenv(env, raw)
    api, worker = Settings(), WorkerSettings()
    for _, field, value in SHARED.values():
        assert getattr(api, field) == getattr(worker, field) == value, field
    assert api.registry_root == worker.registry_root == Path("/models")
    # one PostgreSQL database holds both stores
    assert api.jobs_db == worker.feedback_db == "postgresql://u:pw@db/specrec"
    # and each group's fields are declared once: no process redefines a shared one
    for cls, group in ((Settings, HomeSettings), (WorkerSettings, HomeSettings)):
        for name in group.model_fields:
            assert repr(cls.model_fields[name]) == repr(group.model_fields[name]), name


def test_without_a_database_url_the_stores_are_sqlite_files_under_the_home(monkeypatch):
    monkeypatch.setenv("SPECREC_HOME", "/srv/specrec")
    api, worker = Settings(), WorkerSettings()
    assert api.jobs_db == worker.jobs_db == Path("/srv/specrec/jobs.sqlite")
    assert api.feedback_db == worker.feedback_db == Path("/srv/specrec/interactions.sqlite")


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite:///x.db", "db.example:5432"])
def test_a_database_url_that_is_not_postgresql_is_refused(monkeypatch, url):
    monkeypatch.setenv("SPECREC_DATABASE_URL", url)
    with pytest.raises(ValidationError, match="database_url"):
        WorkerSettings()


def test_gate_and_index_groups_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPECREC_GATE_MIN_ERANK_RATIO", "0.4")
    monkeypatch.setenv("SPECREC_INDEX_KIND", "ivf")
    monkeypatch.setenv("SPECREC_PRECOMPUTE_K", "0")
    assert WorkerSettings().gate_min_erank_ratio == 0.4
    api = Settings()
    assert (api.index_kind, api.precompute_k) == ("ivf", 0)
    assert isinstance(api, IndexSettings)  # what the index is built from


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (GateSettings, {"gate_max_recall_drop": 1.5}),
        (GateSettings, {"gate_min_erank_ratio": -0.1}),
        (IndexSettings, {"index_kind": "annoy"}),
        (IndexSettings, {"precompute_k": -1}),
        (HomeSettings, {"heartbeat_timeout_s": 0}),
        (HomeSettings, {"no_such_setting": 1}),
    ],
)
def test_out_of_range_values_are_refused(cls, kw):
    with pytest.raises(ValidationError):
        cls(**kw)
