"""The settings both processes read, defined once: the API's ``service.settings.Settings`` and
the worker's ``worker.settings.WorkerSettings`` are built from these.

Environment variables carry the prefix ``SPECREC_`` (``SPECREC_HOME``, ``SPECREC_GATE_...``):
set one and both processes see it. Each group is a model of its own, composed into a process's
settings by inheritance so the variable names stay flat.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract import layout

#: Seconds without a heartbeat after which a running job is failed (SPECREC_HEARTBEAT_TIMEOUT_S).
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0
#: Recall@20 an approximate item index must reach to be shipped (SPECREC_INDEX_RECALL).
DEFAULT_INDEX_RECALL = 0.95


class HomeSettings(BaseSettings):
    """Where everything lives and the rules both processes apply to it."""

    model_config = SettingsConfigDict(
        env_prefix="SPECREC_",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    home: Path = Path("./var")
    """Runtime home (env ``SPECREC_HOME``): data, models, the job queue, ingested rows."""
    models_dir: Path | None = None
    """ModelRegistry root; default ``<home>/models``."""
    keep_versions: PositiveInt = 5
    """Published versions kept on disk by the registry (the current and previous never pruned)."""
    heartbeat_timeout_s: float = Field(DEFAULT_HEARTBEAT_TIMEOUT_S, gt=0)
    """A running retrain job whose worker sent no heartbeat for this long is marked failed."""
    dataset: str = layout.DEFAULT_DATASET
    """Dataset under ``<home>/data`` that retrain jobs train on unless a job names one: the
    worker trains on it, POST /retrain resolves a job's defaults for it
    (contract.config.dataset_config)."""
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?://")
    """Where the job queue and the ingested interactions live (env ``SPECREC_DATABASE_URL``):
    unset, SQLite files under the home (one machine); ``postgresql://user:password@host/db``,
    one PostgreSQL database shared by every worker and API replica (extra ``postgres``)."""

    @property
    def registry_root(self) -> Path:
        """The ModelRegistry root: ``models_dir`` or ``<home>/models``."""
        return layout.registry_dir(self.home, self.models_dir)

    @property
    def data_root(self) -> Path:
        """Datasets a retrain job may name: ``<home>/data/<name>``."""
        return layout.data_root(self.home)

    @property
    def jobs_db(self) -> Path | str:
        """The retrain job queue shared by the API and the worker: the database URL, else
        ``<home>/jobs.sqlite``."""
        return self.database_url or layout.jobs_db(self.home)

    @property
    def feedback_db(self) -> Path | str:
        """Ingested interactions, read by the worker at each retrain: the database URL, else
        ``<home>/interactions.sqlite``."""
        return self.database_url or layout.feedback_db(self.home)

    def dataset_dir(self, name: str) -> Path:
        return self.data_root / name


class GateSettings(BaseModel):
    """The quality gate a retrained model passes before it is published (trainer/gate.py)."""

    model_config = ConfigDict(use_attribute_docstrings=True, frozen=True)

    gate_max_recall_drop: float = Field(0.05, ge=0, le=1)
    """Largest allowed relative Recall@20 drop against the serving model, on the new split."""
    gate_min_erank_ratio: float = Field(0.25, ge=0, le=1)
    """Smallest allowed effective rank / d of the row-normalised embeddings [U; I]."""


class IndexBuildSettings(BaseModel):
    """How the publisher chooses an embedding model's item index (contract/annindex.py)."""

    model_config = ConfigDict(use_attribute_docstrings=True, frozen=True)

    index_recall: float = Field(DEFAULT_INDEX_RECALL, ge=0, le=1)
    """Recall@20 the shipped approximate index must reach on held-out queries
    (``SPECREC_INDEX_RECALL``); the fastest setting that does is shipped if it beats exact
    search, else the service searches exactly. 0: choose nothing (no index, no measurement)."""


class IndexBuildEnv(BaseSettings, IndexBuildSettings):
    """``IndexBuildSettings`` from the environment alone (specrec-train's default)."""

    model_config = SettingsConfigDict(env_prefix="SPECREC_", extra="ignore", frozen=True)
