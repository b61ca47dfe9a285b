"""The worker's configuration (``SPECREC_*`` environment variables)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from contract.settings import GateSettings, HomeSettings, IndexBuildSettings
from trainer.launch import DEFAULT_TIMEOUT_S

#: the worker's log lines (its own and its job processes')
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class WorkerSettings(HomeSettings, GateSettings, IndexBuildSettings):
    """The worker's configuration: the shared settings, the gate, the item index's recall
    target, and its own below."""

    model_config = HomeSettings.model_config

    heartbeat_interval_s: float = Field(2.0, gt=0)
    """Seconds between a running job's heartbeats."""
    poll_interval_s: float = Field(1.0, gt=0)
    """Seconds between job-queue polls."""
    device: str | None = None
    """cpu, cuda, cuda:N or mps; unset or auto: CUDA when present, else CPU."""
    retrain_after_interactions: int = Field(0, ge=0)
    """Queue a retrain by itself once this many interactions were ingested beyond those the
    serving model was trained on (0: off)."""
    retrain_after_s: float = Field(0.0, ge=0)
    """Queue a retrain by itself once the serving model is this many seconds old (0: off)."""
    train_processes: int = Field(1, ge=1, le=1024)
    """Data-parallel training processes (torchrun ranks) of a job that does not ask for a
    number itself (``processes`` of POST /retrain); 1: train in the job's own process."""
    bootstrap_objective: Literal["auto", "directspec+", "spectral", "blend"] = "auto"
    """What the first run trains on the default dataset: ``auto`` fits DirectSpec+ and the
    spectral filter on a validation split and publishes the best of them and their blend."""
    dist_timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    """Seconds a rank of a data-parallel job waits for the others before the job fails."""

    def publish_options(self) -> dict[str, Any]:
        """What these settings tell the publisher (trainer.refit.publish_fitted's options):
        the versions to keep and the item index's recall target."""
        return {"keep": self.keep_versions, "index_recall": self.index_recall}

    refit: bool = True
    """Publish a model refitted on every known pair after the evaluation run (trainer.refit),
    for the bootstrap and for jobs that do not say (``refit`` of POST /retrain)."""
    job_retries: int = Field(1, ge=0, le=100)
    """Times a job whose training process or worker died is queued again, to resume from its
    last checkpoint, before it fails (0: it fails at once)."""
    checkpoint_every: int = Field(1, ge=0)
    """Epochs between a job's training checkpoints (in its work directory, never published,
    removed when the job ends); 0: none, a retried job starts from epoch 1."""
