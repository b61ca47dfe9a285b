"""What a retrain job asks for, turned into a TrainConfig (torch-free: the API validates with it).

A job's parameters are ``{"encoder"?, "objective"?, "epochs"?, "dataset"?, "hyperparameters"?,
"force"?}``. The product default (``default_synthetic_config``) is the base; naming another
objective or encoder switches to that objective's defaults, keeping the default's length and
evaluation schedule; ``hyperparameters`` override any TrainConfig field last.
"""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig, default_synthetic_config

#: TrainConfig fields a job may not set: they belong to the worker process.
RESERVED_FIELDS = frozenset({"device", "num_threads"})


def train_config_for_job(params: dict[str, Any], device: str | None = None) -> TrainConfig:
    """The TrainConfig a job runs with; raises ConfigError (a ValueError) naming bad fields."""
    from trainer.config import ConfigError

    hyper = dict(params.get("hyperparameters") or {})
    reserved = sorted(RESERVED_FIELDS & set(hyper))
    if reserved:
        raise ConfigError(f"hyperparameters: {reserved} are set by the worker, not by a job")
    base = default_synthetic_config()
    switched = {k: params[k] for k in ("objective", "encoder") if params.get(k) is not None}
    if switched and any(getattr(base, k) != v for k, v in switched.items()):
        fresh = TrainConfig.defaults(
            switched.get("objective", base.objective), switched.get("encoder", base.encoder)
        )
        base = fresh.with_overrides(epochs=base.epochs, eval_every=base.eval_every)
    overrides: dict[str, Any] = {**hyper}
    if params.get("epochs") is not None:
        overrides["epochs"] = params["epochs"]
    if device:
        overrides["device"] = device
    return TrainConfig.from_dict({**base.to_dict(), **overrides})
