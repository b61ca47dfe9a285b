"""TrainConfig defaults, validation messages, dict round trip; device selection."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from pydantic import TypeAdapter

from contract.config import (
    DATASET_DEFAULTS,
    ConfigError,
    Objective,
    TrainConfig,
    dataset_config,
    default_synthetic_config,
    optional_fields,
)
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
    assert (bpr.optimizer, bpr.lr, bpr.reg, bpr.sampler) == ("sparse_adam", 1e-3, 1e-4, "pair")
    au = TrainConfig.defaults("directau", "mf")
    assert (au.optimizer, au.gamma, au.uniformity_t) == ("sparse_adam", 1.0, 2.0)
    gcn_bpr = TrainConfig.defaults("bpr", "lightgcn")
    assert (gcn_bpr.optimizer, gcn_bpr.sub_batches, gcn_bpr.lr) == (
        "adam",
        4,
        4e-3,
    )  # every row moves
    assert (gcn.sub_batches, TrainConfig.defaults("directspec+", "mf").sub_batches) == (16, 1)


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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": -1.0}, "lr: -1.0, expected a finite number > 0"),
        ({"dim": 0}, "dim: 0, expected an integer in [1, 4096]"),
        ({"dim": True}, "dim: True, expected an integer in [1, 4096]"),  # strict: no bools
        ({"lr": "5"}, "lr: '5', expected a finite number > 0"),  # nor strings
        ({"lr_decay": 1.5}, "lr_decay: 1.5, expected a number in (0, 1]"),
        ({"val_fraction": 0.9}, "val_fraction: 0.9, expected a number in (0, 0.5]"),
        ({"ks": (0, 20)}, "ks: (0, 20), expected one or more integers in [1, 1000]"),
        ({"ks": ()}, "ks: (), expected one or more integers in [1, 1000]"),
        ({"tau0": 0.0}, "tau0: 0.0, expected a finite number > 0 or None"),
        (
            {"optimizer": "rmsprop"},
            "optimizer: 'rmsprop', expected one of ['sgd', 'adam', 'sparse_adam']",
        ),
        ({"adaptive_tau": 1}, "adaptive_tau: 1, expected true or false"),
        ({"adaptive_tau": True, "tau": 0.5}, "tau0: defaults to tau - 0.5 = 0.0, must be > 0"),
        ({"objective": "bpr"}, "sampler: 'user' is not supported for bpr, expected 'pair'"),
        (
            {"early_stop_metric": "ndcg@5"},
            "early_stop_metric: 'ndcg@5', expected recall@K or ndcg@K with K in ks [10, 20]",
        ),
    ],
)
def test_messages_give_the_value_and_the_range_of_the_field(overrides, message):
    """The expected range in a message is derived from the field's constraints."""
    with pytest.raises(ConfigError) as info:
        TrainConfig(**overrides)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_several_bad_fields_are_named_in_one_line():
    with pytest.raises(ConfigError) as info:
        TrainConfig(dim=0, lr=-1.0)
    assert str(info.value) == (
        "dim: 0, expected an integer in [1, 4096]; lr: -1.0, expected a finite number > 0"
    )


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ConfigError, match=r"^unknown config field\(s\) \['nope'\]; known: \["):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "nope": 1})


def test_a_frozen_validated_model():
    cfg = TrainConfig()
    with pytest.raises(ValueError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert hash(cfg) == hash(TrainConfig())
    assert cfg.with_overrides(lr=5).lr == 5.0 and cfg.lr == 180.0
    with pytest.raises(ConfigError, match="^lr: "):
        cfg.with_overrides(lr=0)
    with pytest.raises(ConfigError, match="unknown config field"):
        cfg.with_overrides(learning_rate=0.1)
    assert TrainConfig(device=" Auto ").device is None
    assert TrainConfig(dim=16.0).dim == 16  # a whole float is an integer, as in JSON
    assert TrainConfig(ks=[5, 20]).ks == (5, 20)  # lists (JSON) become tuples


def test_every_field_has_a_docstring_and_the_schema_has_the_ranges():
    """The attribute docstrings are the fields' descriptions (the CLI's help, the API's docs);
    the Field constraints are the JSON schema's."""
    for name, info in TrainConfig.model_fields.items():
        assert info.description and len(info.description) > 10, name
    props = TrainConfig.model_json_schema()["properties"]
    assert (props["dim"]["minimum"], props["dim"]["maximum"]) == (1, 4096)
    assert props["ks"]["items"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert props["lr_decay"]["exclusiveMinimum"] == 0 and props["lr_decay"]["maximum"] == 1
    assert props["objective"]["enum"] == list(get_args(Objective))


def test_optional_fields_are_trainconfigs_minus_some():
    defs = optional_fields({"device", "encoder"})
    assert list(defs) == [n for n in TrainConfig.model_fields if n not in ("device", "encoder")]
    tp, info = defs["dim"]
    assert info.default is None and info.description == TrainConfig.model_fields["dim"].description
    adapter = TypeAdapter(tp)
    assert adapter.validate_python(None) is None and adapter.validate_python(8) == 8
    with pytest.raises(ValueError):
        adapter.validate_python(0)


def test_default_synthetic_config_is_short_for_every_objective():
    cfg = default_synthetic_config()
    assert (cfg.objective, cfg.encoder, cfg.epochs) == ("directspec+", "mf", 10)
    assert (cfg.lr, cfg.shrink_norm, cfg.tau, cfg.alpha) == (500.0, 0.1, 6.0, 0.5)
    assert default_synthetic_config("align").alpha == 0.0
    assert default_synthetic_config("directspec").alpha == 0.01  # the linear step needs a small one
    assert default_synthetic_config("bpr").optimizer == "sparse_adam"
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


def test_presets_sit_between_the_objective_defaults_and_the_overrides():
    ref = TrainConfig.defaults("directspec+", "mf", preset="gowalla-reference")
    assert (ref.lr, ref.alpha, ref.tau, ref.shrink_norm) == (200.0, 0.7, 4.0, 0.02)
    assert (ref.optimizer, ref.batch_size) == ("sgd", 256)  # the objective's defaults stay
    fast = TrainConfig.defaults("directspec+", "mf", preset="gowalla-fast", epochs=20)
    assert (fast.lr, fast.shrink_norm, fast.epochs) == (1000.0, 0.1, 20)
    assert TrainConfig.defaults("directspec+", "mf", preset="gowalla-fast", lr=5.0).lr == 5.0
    with pytest.raises(ConfigError, match=r"preset: 'yelp', expected one of \['gowalla-reference'"):
        TrainConfig.defaults("directspec+", "mf", preset="yelp")


def test_dataset_config_layers_the_datasets_row_between_objective_and_preset():
    """DATASET_DEFAULTS is the one per-dataset table: the synthetic default has its own short
    schedules; a dataset without a row trains with the objective's defaults."""
    assert set(DATASET_DEFAULTS) == {"default"}
    assert dataset_config("default") == default_synthetic_config()
    synthetic = dataset_config("default", "directspec+", "lightgcn")
    assert (synthetic.epochs, synthetic.eval_every, synthetic.lr) == (4, 2, 500.0)
    for name in ("gowalla", "citeulike", None):
        assert dataset_config(name, "bpr") == TrainConfig.defaults("bpr", "mf")
    # a preset goes over the dataset's row, the overrides over both
    fast = dataset_config("default", preset="gowalla-fast")
    assert (fast.lr, fast.shrink_norm, fast.epochs, fast.tau) == (1000.0, 0.1, 10, 4.0)
    assert dataset_config("default", preset="gowalla-fast", lr=3.0).lr == 3.0
    with pytest.raises(ConfigError, match=r"preset: 'yelp', expected one of"):
        dataset_config("default", preset="yelp")  # type: ignore[arg-type]
