"""Retrain job parameters -> TrainConfig."""

from __future__ import annotations

import pytest

from trainer.config import ConfigError, TrainConfig, default_synthetic_config
from trainer.jobspec import train_config_for_job


def test_empty_job_is_the_product_default() -> None:
    assert train_config_for_job({}) == default_synthetic_config()


def test_epochs_and_hyperparameters_override() -> None:
    cfg = train_config_for_job({"epochs": 7, "hyperparameters": {"lr": 50.0, "dim": 32}})
    assert (cfg.epochs, cfg.lr, cfg.dim) == (7, 50.0, 32)
    assert cfg.objective == "directspec+"


def test_align_keeps_the_tuned_steps_and_zero_alpha() -> None:
    tuned = default_synthetic_config()
    cfg = train_config_for_job({"objective": "align"})
    assert cfg.objective == "align" and cfg.alpha == 0.0
    assert (cfg.lr, cfg.shrink_norm, cfg.epochs) == (tuned.lr, tuned.shrink_norm, tuned.epochs)


def test_bpr_gets_its_own_defaults() -> None:
    cfg = train_config_for_job({"objective": "bpr", "encoder": "lightgcn"})
    ref = TrainConfig.defaults("bpr", "lightgcn")
    assert (cfg.optimizer, cfg.lr, cfg.sampler) == (ref.optimizer, ref.lr, ref.sampler)
    assert cfg.epochs == default_synthetic_config().epochs


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
