"""Retrain job parameters -> TrainConfig."""

from __future__ import annotations

import pytest

from contract.config import ConfigError, TrainConfig, dataset_config, default_synthetic_config
from contract.jobspec import (
    REFIT_KEY,
    TRAIN_CONFIG_KEY,
    job_params,
    job_refit,
    train_config_for_job,
)


def test_empty_job_is_the_product_default() -> None:
    assert train_config_for_job({}) == default_synthetic_config()


def test_a_job_refits_unless_it_or_the_worker_says_not() -> None:
    assert REFIT_KEY == "refit"
    assert job_refit({}, True) is True and job_refit({}, False) is False
    assert job_refit({"refit": None}, True) is True  # null: the worker's setting
    assert job_refit({"refit": False}, True) is False
    assert job_refit({"refit": True}, False) is True


def test_epochs_and_hyperparameters_override() -> None:
    cfg = train_config_for_job({"epochs": 7, "hyperparameters": {"lr": 50.0, "dim": 32}})
    assert (cfg.epochs, cfg.lr, cfg.dim) == (7, 50.0, 32)
    assert cfg.objective == "directspec+"


def test_objective_and_encoder_pick_their_tuned_defaults() -> None:
    for objective, encoder in [("align", "mf"), ("bpr", "lightgcn"), ("directau", "mf")]:
        cfg = train_config_for_job({"objective": objective, "encoder": encoder})
        assert cfg == default_synthetic_config(objective, encoder)
    cfg = train_config_for_job({"objective": "bpr", "encoder": "lightgcn", "epochs": 3})
    ref = TrainConfig.defaults("bpr", "lightgcn")
    assert (cfg.optimizer, cfg.sampler, cfg.encoder, cfg.epochs) == (
        ref.optimizer,
        ref.sampler,
        "lightgcn",
        3,
    )


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"hyperparameters": {"lr": -1.0}}, "lr"),
        ({"hyperparameters": {"nope": 1}}, "unknown config field(s) ['nope']"),
        ({"hyperparameters": {"device": "cuda"}}, "set by the worker"),
    ],
)
def test_bad_parameters_name_the_field(params: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        train_config_for_job(params)
    assert fragment in str(info.value)


def test_worker_device_is_applied() -> None:
    assert train_config_for_job({}, device="cpu").device == "cpu"


def test_the_stored_config_reads_back_as_the_same_config() -> None:
    """POST /retrain stores to_dict() under TRAIN_CONFIG_KEY; the worker reads it back and adds
    its device: the same config, derived once."""
    params = {"objective": "bpr", "epochs": 3, "hyperparameters": {"ks": [10, 20, 50]}}
    cfg = train_config_for_job(params)
    stored = {**params, TRAIN_CONFIG_KEY: cfg.to_dict()}
    assert cfg.device is None
    back = TrainConfig.from_dict(stored[TRAIN_CONFIG_KEY])
    assert back == cfg and back.ks == (10, 20, 50)
    assert back.with_overrides(device="cpu") == train_config_for_job(params, device="cpu")


def test_hyperparameters_epochs_win_over_the_top_level_epochs() -> None:
    """As RetrainRequest.epochs and this module document: epochs, then hyperparameters."""
    cfg = train_config_for_job({"epochs": 7, "hyperparameters": {"epochs": 9, "lr": 50.0}})
    assert (cfg.epochs, cfg.lr) == (9, 50.0)
    assert train_config_for_job({"epochs": 7, "hyperparameters": {"lr": 50.0}}).epochs == 7
    assert train_config_for_job({"hyperparameters": {"epochs": 9}}).epochs == 9


def test_a_job_starts_from_its_datasets_defaults() -> None:
    """The one table (contract.config.DATASET_DEFAULTS): the synthetic default dataset's short
    schedule; any other dataset the per-objective defaults specrec-train uses for it."""
    assert train_config_for_job({"dataset": "default"}) == default_synthetic_config()
    real = train_config_for_job({"dataset": "gowalla"})
    assert real == TrainConfig.defaults("directspec+", "mf") == dataset_config("gowalla")
    assert (real.epochs, real.lr) == (300, 180.0)  # not the synthetic 10 epochs at lr 500
    bpr = train_config_for_job({"dataset": "gowalla", "objective": "bpr", "epochs": 4})
    assert bpr == TrainConfig.defaults("bpr", "mf", epochs=4)
    # no dataset named: the configured one (SPECREC_DATASET), the synthetic one by default
    assert train_config_for_job({}, default_dataset="gowalla") == real
    assert train_config_for_job({"dataset": "default"}, default_dataset="gowalla") == (
        default_synthetic_config()
    )
    params = job_params({}, default_dataset="gowalla")
    assert params == {TRAIN_CONFIG_KEY: real.to_dict()}
