"""What a retrain job asks for, turned into a TrainConfig (torch-free: the API validates with it).

A job's parameters are ``{"encoder"?, "objective"?, "epochs"?, "dataset"?, "hyperparameters"?,
"force"?}``. The product default (``default_synthetic_config``) is the base; naming another
objective or encoder switches to that objective's defaults, keeping the default's length and
evaluation schedule (and, within the DirectSpec family, the tuned lr, shrink_norm, tau and
alpha); ``hyperparameters`` override any TrainConfig field last. For a real dataset pass its
reference hyper-parameters explicitly (docs/directspec.md).
"""

from __future__ import annotations

from typing import Any

from trainer.config import DIRECTSPEC_FAMILY, TrainConfig, default_synthetic_config

#: TrainConfig fields a job may not set: they belong to the worker process.
RESERVED_FIELDS = frozenset({"device", "num_threads"})


def train_config_for_job(params: dict[str, Any], device: str | None = None) -> TrainConfig:
    """The TrainConfig a job runs with; raises ConfigError (a ValueError) naming bad fields."""
    from trainer.config import ConfigError

    hyper = dict(params.get("hyperparameters") or {})
    reserved = sorted(RESERVED_FIELDS & set(hyper))
    if reserved:
        raise ConfigError(f"hyperparameters: {reserved} are set by the worker, not by a job")
    tuned = default_synthetic_config()
    objective = params.get("objective") or tuned.objective
    encoder = params.get("encoder") or tuned.encoder
    keep = ("epochs", "eval_every")
    if objective in DIRECTSPEC_FAMILY:  # the tuned step sizes carry over within the family
        keep += ("lr", "shrink_norm", "tau", "alpha")
    base = TrainConfig.defaults(objective, encoder, **{k: getattr(tuned, k) for k in keep})
    if objective == "align":
        base = base.with_overrides(alpha=0.0)
    overrides: dict[str, Any] = {**hyper}
    if params.get("epochs") is not None:
        overrides["epochs"] = params["epochs"]
    if device:
        overrides["device"] = device
    return TrainConfig.from_dict({**base.to_dict(), **overrides})
