"""What a retrain job asks for, turned into a TrainConfig (torch-free: the API validates with it).

A job's parameters are ``{"encoder"?, "objective"?, "epochs"?, "dataset"?, "hyperparameters"?,
"force"?, "processes"?, "refit"?}`` (processes: data-parallel training ranks, worker.ranks;
refit: publish a model refitted on every pair after the evaluation run, trainer.refit; absent:
the worker's ``refit`` setting, on by default). The
base is ``dataset_config(dataset, objective, encoder)``: the defaults specrec-train uses for
the same dataset (contract.config.DATASET_DEFAULTS; the dataset is the job's, else the
configured ``SPECREC_DATASET``; DirectSpec+ MF when no objective/encoder is named). On top,
``epochs`` and then ``hyperparameters`` override TrainConfig fields: ``hyperparameters.epochs``
wins over a top-level ``epochs``.

POST /retrain derives the config once, with ``train_config_for_job(params)``, and stores it with
the job as ``params["train_config"]`` (``TrainConfig.to_dict()``); the worker trains with
``TrainConfig.from_dict(params["train_config"])`` plus its own device. ``job_params`` builds that
dict, for the API and for the jobs the worker queues by itself (scheduled retraining), which also
record why under ``params["trigger"]`` (``{"kind": "interactions" | "schedule", ...}``; API jobs
have none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.config import ConfigError, TrainConfig, dataset_config
from contract.layout import DEFAULT_DATASET

#: TrainConfig fields a job may not set: they belong to the worker process.
RESERVED_FIELDS = frozenset({"device", "num_threads"})
#: The key of a job's params under which POST /retrain stores ``train_config_for_job(params)``.
TRAIN_CONFIG_KEY = "train_config"
#: The key of a job's params holding how many data-parallel processes it trains in (absent:
#: the worker's ``train_processes``).
PROCESSES_KEY = "processes"
#: The key of a job's params saying whether the published model is refitted on every pair
#: (trainer.refit; absent: the worker's ``refit`` setting).
REFIT_KEY = "refit"
#: The key of a job's params under which the worker records what made it queue the job.
TRIGGER_KEY = "trigger"


def train_config_for_job(
    params: Mapping[str, Any],
    device: str | None = None,
    *,
    default_dataset: str = DEFAULT_DATASET,
) -> TrainConfig:
    """The TrainConfig a job runs with (on ``params["dataset"]``, else `default_dataset`);
    raises ConfigError (a ValueError) naming bad fields."""
    hyper = dict(params.get("hyperparameters") or {})
    reserved = sorted(RESERVED_FIELDS & set(hyper))
    if reserved:
        raise ConfigError(f"hyperparameters: {reserved} are set by the worker, not by a job")
    base = dataset_config(
        params.get("dataset") or default_dataset,
        params.get("objective") or "directspec+",
        params.get("encoder") or "mf",
    )
    overrides: dict[str, Any] = {}
    if params.get("epochs") is not None:
        overrides["epochs"] = params["epochs"]
    overrides |= hyper  # hyperparameters.epochs wins over the top-level epochs
    if device:
        overrides["device"] = device
    return TrainConfig.from_dict({**base.to_dict(), **overrides})


def job_refit(params: Mapping[str, Any], default: bool) -> bool:
    """Whether a job with ``params`` refits (REFIT_KEY), ``default`` when it does not say."""
    value = params.get(REFIT_KEY)
    return default if value is None else bool(value)


def job_params(
    request: Mapping[str, Any],
    trigger: Mapping[str, Any] | None = None,
    *,
    default_dataset: str = DEFAULT_DATASET,
) -> dict[str, Any]:
    """The params a job is queued with: ``request`` (a job's parameters, nulls left out) plus
    ``train_config_for_job(request, default_dataset=...).to_dict()`` under TRAIN_CONFIG_KEY
    and, for a job the worker queued by itself, ``trigger`` under TRIGGER_KEY. Raises what
    train_config_for_job raises."""
    params = dict(request)
    params[TRAIN_CONFIG_KEY] = train_config_for_job(
        params, default_dataset=default_dataset
    ).to_dict()
    if trigger is not None:
        params[TRIGGER_KEY] = dict(trigger)
    return params
