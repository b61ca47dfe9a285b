"""TrainConfig defaults, validation messages, dict round trip; device selection."""

from __future__ import annotations

import pytest
import torch

from contract.config import ConfigError, TrainConfig, default_synthetic_config
from trainer.device import DeviceError, pick_device


def test_reference_defaults_for_the_directspec_family():
    mf = TrainConfig.defaults("directspec+", "mf")
    assert (mf.dim, mf.batch_size, mf.optimizer, mf.init) == (64, 256, "sgd", "xavier")
    assert (mf.lr, mf.lr_decay, mf.alpha, mf.tau, mf.shrink_norm, mf.reg) == (
        180.0,
        0.9995,
        1.0,
        3.0,
        0.03,
        0.0,
    )
    gcn = TrainConfig.defaults("directspec+", "lightgcn")
    assert (gcn.lr_decay, gcn.reg, gcn.n_layers) == (0.9999, 0.01, 3)
    assert TrainConfig.defaults("directspec", "mf").alpha == 0.01
    align = TrainConfig.defaults("align", "mf")
    assert align.alpha == 0.0 and align.lr == 180.0 and align.balancing == "none"
    bpr = TrainConfig.defaults("bpr", "mf")
    assert (bpr.optimizer, bpr.lr, bpr.reg, bpr.sampler) == ("adam", 1e-3, 1e-4, "pair")
    au = TrainConfig.defaults("directau", "mf")
    assert (au.optimizer, au.gamma, au.uniformity_t) == ("adam", 1.0, 2.0)


def test_overrides_apply_on_top_of_defaults():
    cfg = TrainConfig.defaults("directspec+", "mf", lr=10.0, adaptive_tau=True, tau=3.0)
    assert cfg.lr == 10.0 and cfg.lr_decay == 0.9995
    assert (cfg.tau_related, cfg.tau_unrelated) == (2.5, 3.0)


def test_round_trip_through_dict():
    cfg = TrainConfig.defaults("bpr", "lightgcn", ks=(5, 20), device="cpu", seed=3)
    d = cfg.to_dict()
    assert d["ks"] == [5, 20]
    assert TrainConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"dim": 0}, "dim"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"alpha": -0.1}, "alpha"),
        ({"tau": 0.0}, "tau"),
        ({"epochs": 2.5}, "epochs"),
        ({"objective": "softmax"}, "objective"),
        ({"encoder": "gcn"}, "encoder"),
        ({"ks": (0, 20)}, "ks"),
        ({"early_stop_metric": "recall@50"}, "early_stop_metric"),
        ({"device": "tpu"}, "device"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"adaptive_tau": True, "tau": 0.4}, "tau0"),
    ],
)
def test_validation_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        TrainConfig(**overrides)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_default_synthetic_config_is_short_for_every_objective():
    cfg = default_synthetic_config()
    assert (cfg.objective, cfg.encoder, cfg.epochs) == ("directspec+", "mf", 10)
    assert (cfg.lr, cfg.shrink_norm, cfg.tau, cfg.alpha) == (500.0, 0.1, 6.0, 0.5)
    assert default_synthetic_config("align").alpha == 0.0
    assert default_synthetic_config("directspec").alpha == 0.01  # the linear step needs a small one
    assert default_synthetic_config("bpr").optimizer == "adam"
    assert default_synthetic_config("directspec+", "lightgcn").epochs == 4
    assert default_synthetic_config(epochs=3).epochs == 3
    with pytest.raises(ConfigError, match="objective"):
        default_synthetic_config("softmax")  # type: ignore[arg-type]


def test_pick_device_order(monkeypatch):
    monkeypatch.delenv("SPECREC_DEVICE", raising=False)
    auto = pick_device(None)
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("SPECREC_DEVICE", "cpu")
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setenv("SPECREC_DEVICE", "nonsense")
    assert pick_device("cpu") == torch.device("cpu")  # explicit wins over the environment
    with pytest.raises(DeviceError, match="SPECREC_DEVICE"):
        pick_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_pick_device_refuses_missing_cuda():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pick_device("cuda")
