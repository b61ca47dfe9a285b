"""Service settings: one typed object read from the environment (prefix ``SPECREC_``).

``HOST``, ``PORT`` and ``ADMIN_TOKEN`` are read without the prefix, as container platforms set
them. Build one with ``Settings()`` (environment) or ``Settings(home=tmp_path, ...)`` (tests) and
pass it to ``service.app.create_app``; nothing reads a module global.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from contract.layout import DEFAULT_DATASET
from contract.settings import HomeSettings

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
ExactBackend = Literal["auto", "numpy", "faiss"]

#: Values that look like a token but are documentation placeholders; refused at startup.
PLACEHOLDER_TOKENS = frozenset({"changethis", "change-me", "changeme", "secret", "token"})


class IndexSettings(BaseModel):
    """How the item embeddings are indexed and searched (service/index.py, service/serving.py)."""

    model_config = ConfigDict(use_attribute_docstrings=True, frozen=True)

    index_kind: IndexKind = "auto"
    """``auto``: the approximate index the artifact ships (chosen at publish for a recall
    target, contract/annindex.py), searched with its recorded parameters, else exact search;
    ``flat``: exact inner product always; ``ivf`` (IndexIVFFlat) or ``hnsw`` (IndexHNSWFlat):
    the shipped index when it is of that kind, else one built at load from the settings
    below."""
    exact_backend: ExactBackend = "auto"
    """For ``flat``: ``numpy`` (GEMM + argpartition), ``faiss`` (IndexFlatIP), or ``auto``
    (FAISS on GPU, numpy on CPU, where bench/serve_exact.py measured it faster)."""
    ivf_nlist: PositiveInt | None = None
    """IVF coarse cells; default round(sqrt(n_items)), clamped to [1, n_items // 39]."""
    ivf_nprobe: PositiveInt = 32
    """IVF cells visited per query (default per call; requests may not override it). A
    shipped index uses its recorded nprobe unless this is set."""
    hnsw_m: PositiveInt = 32
    """HNSW neighbours per node."""
    hnsw_ef_construction: PositiveInt = 80
    """HNSW candidate list size while building."""
    hnsw_ef_search: PositiveInt = 128
    """HNSW candidate list size per query (raised to k automatically). A shipped index uses
    its recorded efSearch unless this is set."""
    use_gpu: bool | None = None
    """Put the index on the GPU: None = when faiss-gpu and a GPU are present."""
    precompute_k: int = Field(100, ge=0)
    """Answer from per-user top lists (0: off, always search): the artifact's (written by
    the trainer, 100 long), or for a model without them lists of this length, each the
    answer of a user's first search (service/precompute.py). GET /recommend with k <= the
    length is then a lookup instead of a search (same answers)."""
    top_list_cache_users: int = Field(20_000, ge=0)
    """For a model without stored lists: the users whose lists are kept, the least recently
    used dropped first (about 1 KB each; 0: none, every such request searches)."""
    search_buffer_mb: PositiveInt = 64
    """Scratch memory for one exact GEMM chunk (rows × n_items float32)."""


class Settings(HomeSettings, IndexSettings):
    """Everything the service process is configured with. Each field documents its unit."""

    model_config = HomeSettings.model_config

    # ---- process -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("HOST", "host"))
    """Interface uvicorn binds to (env ``HOST``)."""
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port"))
    """TCP port uvicorn listens on (env ``PORT``)."""
    admin_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ADMIN_TOKEN", "admin_token")
    )
    """Bearer token for admin endpoints (env ``ADMIN_TOKEN``). Unset: admin endpoints answer 503."""
    log_level: str = "info"
    """uvicorn / service log level."""
    workers: PositiveInt = 1
    """uvicorn worker processes on the one port. Each loads the serving model itself, its
    arrays read-only memory maps of the artifact that the workers share in the page cache
    (memory per worker: docs/benchmarks.md, "Several workers"); ingested interactions reach every
    worker's fold-in through the shared SQLite store within about a millisecond."""

    # ---- model watcher -------------------------------------------------------------------
    watch_interval_s: float = Field(2.0, gt=0)
    """Seconds between polls of the registry's CURRENT pointer."""
    watch: bool = True
    """Run the watcher (off: models change only through POST /models/{version}/activate)."""

    # ---- search (the index settings are IndexSettings above) ------------------------------
    faiss_threads: PositiveInt = 1
    """OpenMP threads per search call. Requests already run concurrently, so 1 avoids
    oversubscribing small machines; raise it for large batch searches on big hosts."""
    max_batch_queries: PositiveInt = 256
    """At most this many queued queries are searched together by the batcher."""
    inline_search_max_cells: int = Field(1_048_576, ge=0)
    """A request whose search reads at most this many numbers (queries × items × dimensions:
    16k items at d = 64) is searched on the event loop, batched with the others of that loop
    iteration, instead of on the search thread: below about this size one exact scan costs
    less than the hand-off to the thread and back (~0.1 ms). A Gowalla-size user (40,981 × 64
    = 2.6M) stays on the thread, which measured faster under load (docs/benchmarks.md,
    "Searched answers"). 0: always the thread."""

    # ---- API limits ----------------------------------------------------------------------
    max_k: PositiveInt = 1000
    """Largest k accepted by /recommend and /similar (422 beyond)."""
    default_k: PositiveInt = 20
    """k when the request does not give one."""
    max_batch_users: PositiveInt = 1000
    """Largest POST /recommend batch (422 beyond)."""
    max_exclude: PositiveInt = 10_000
    """Largest ``exclude`` list per request (422 beyond)."""
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    """Largest request body in bytes (413 beyond, before the body is read)."""

    # ---- retraining & ingestion -----------------------------------------------------------
    ingest_token: SecretStr | None = None
    """Bearer token accepted by POST /interactions besides ADMIN_TOKEN (for ingest pipelines)."""
    max_ingest_batch: PositiveInt = 10_000
    """Largest POST /interactions batch in rows (422 ``batch_too_large`` beyond)."""
    fold_in: bool = True
    """Fold ingested interactions the serving model has not seen into answers at once: a
    new user is answered from them (``source: fold-in``), a known user's vector moves by them
    (docs/method.md, "Fold-in"). Off: they count only from the next retrain on."""

    # ---- spectrum verdict ----------------------------------------------------------------
    healthy_erank_ratio: float = Field(0.5, gt=0, le=1)
    """Normalised erank / d at or above which a side is ``healthy``."""
    collapsed_erank_ratio: float = Field(0.2, gt=0, le=1)
    """Normalised erank / d below which a side is ``collapsed`` (alignment-only ≈ 8/64 = 0.125)."""

    @field_validator("admin_token")
    @classmethod
    def _refuse_placeholder(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        if v.get_secret_value().strip().lower() in PLACEHOLDER_TOKENS:
            raise ValueError(
                "ADMIN_TOKEN is a placeholder; set a random one, e.g. "
                "ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.collapsed_erank_ratio > self.healthy_erank_ratio:
            raise ValueError(
                f"collapsed_erank_ratio {self.collapsed_erank_ratio} must not exceed "
                f"healthy_erank_ratio {self.healthy_erank_ratio}"
            )
        if self.default_k > self.max_k:
            raise ValueError(f"default_k {self.default_k} exceeds max_k {self.max_k}")
        return self

    def admin_token_value(self) -> str | None:
        return self.admin_token.get_secret_value() if self.admin_token is not None else None

    def ingest_token_value(self) -> str | None:
        v = self.ingest_token.get_secret_value().strip() if self.ingest_token else ""
        return v or None


def launcher_env(settings: Settings) -> dict[str, str]:
    """What scripts/run.sh needs, from the one definition of each setting: the absolute home,
    the registry root and the default dataset's directory (contract.layout), and where the API
    listens."""
    return {
        "SPECREC_HOME": os.path.abspath(settings.home),
        "models_dir": os.path.abspath(settings.registry_root),
        "default_data": os.path.abspath(settings.dataset_dir(DEFAULT_DATASET)),
        "HOST": settings.host,
        "PORT": str(settings.port),
    }


def main() -> int:
    """``python -m service.settings``: launcher_env() of this environment as shell
    assignments (scripts/run.sh evaluates them); exit 2 with the reason for invalid settings."""
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"specrec: invalid settings: {e}", file=sys.stderr)
        return 2
    for name, value in launcher_env(settings).items():
        print(f"{name}={shlex.quote(value)}")
    return 0


def search_threads_env(threads: int) -> dict[str, str]:
    """Environment that caps BLAS/OpenMP pools; must be set before numpy/faiss load."""
    return {
        name: str(threads)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        if name not in os.environ
    }


if __name__ == "__main__":
    raise SystemExit(main())
