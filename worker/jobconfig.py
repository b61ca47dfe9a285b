"""The TrainConfig a claimed job runs with."""

from __future__ import annotations

from contract.config import TrainConfig
from contract.jobspec import AUTO, TRAIN_CONFIG_KEY, train_config_for_job
from store.jobs import Job


def job_train_config(job: Job, device: str | None) -> TrainConfig:
    """The TrainConfig ``job`` runs with, on this worker's ``device`` (None: auto).

    The API resolves a job's config once, when it is queued, and stores it with the job
    (``params["train_config"]``, a ``TrainConfig.to_dict()`` without a device); the worker runs
    exactly that. A job queued without it (older queue rows, tests that enqueue directly) is
    resolved from its parameters here, as the API would have. The device is always the
    worker's: it is no part of what a job asks for.
    """
    stored = job.params.get(TRAIN_CONFIG_KEY)
    if stored is None:
        return train_config_for_job(job.params, device)
    return TrainConfig.from_dict(stored).with_overrides(device=device)


def auto_candidates(job: Job, device: str | None) -> list[TrainConfig]:
    """What an ``"objective": "auto"`` job chooses between: DirectSpec+ (the job's config, as
    resolved when it was queued) and the spectral filter (its defaults plus the job's
    hyper-parameters that concern it)."""
    directspec = job_train_config(job, device)
    spectral = train_config_for_job({**job.params, "objective": "spectral"}, device)
    return [directspec, spectral]


def is_auto(job: Job) -> bool:
    """Whether the job asks for the validation winner (``"objective": "auto"``)."""
    return job.params.get("objective") == AUTO
