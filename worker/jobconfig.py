"""The TrainConfig a claimed job runs with."""

from __future__ import annotations

from contract.config import TrainConfig
from contract.jobspec import TRAIN_CONFIG_KEY, train_config_for_job
from contract.layout import DEFAULT_DATASET
from store.jobs import Job


def job_train_config(
    job: Job, device: str | None, default_dataset: str = DEFAULT_DATASET
) -> TrainConfig:
    """The TrainConfig ``job`` runs with, on this worker's ``device`` (None: auto).

    The API resolves a job's config once, when it is queued, and stores it with the job
    (``params["train_config"]``, a ``TrainConfig.to_dict()`` without a device); the worker runs
    exactly that. A job queued without it (older queue rows, tests that enqueue directly) is
    resolved from its parameters here (on ``default_dataset`` unless it names one), as the API
    would have. The device is always the worker's: it is no part of what a job asks for.
    """
    stored = job.params.get(TRAIN_CONFIG_KEY)
    if stored is None:
        return train_config_for_job(job.params, device, default_dataset=default_dataset)
    return TrainConfig.from_dict(stored).with_overrides(device=device)
