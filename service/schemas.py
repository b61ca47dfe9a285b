"""Request and response bodies (pydantic), documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints

from service.errors import ErrorBody

ID_MAX_LEN = 256
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # any printable text; control characters are malformed
ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX_LEN, pattern=ID_PATTERN)
]
Fallback = Literal["popular"]


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    """Inner product of user and item embeddings; for the popular fallback, the number of
    training interactions of the item."""
    rank: int
    """1 for the best item."""


class RecommendResponse(BaseModel):
    user_id: str
    model_version: str
    k: int
    items: list[RecommendedItem]
    """At most k items, best first; fewer when the catalogue minus excluded items is smaller."""
    fallback: Fallback | None = None
    """``popular`` when the user is unknown and ``fallback=popular`` was asked for."""
    exact: bool
    """True when the index is exact (flat); False for IVF/HNSW."""
    unknown_exclude: list[str] = []
    """Ids in ``exclude`` that are not in the catalogue (ignored)."""


class BatchUserResult(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    """Empty when ``error`` is set."""
    fallback: Fallback | None = None
    error: ErrorBody | None = None
    """Set (code ``unknown_user``) for an unknown user without fallback; the batch still
    succeeds."""


class BatchRecommendResponse(BaseModel):
    model_version: str
    k: int
    exact: bool
    results: list[BatchUserResult]
    """One entry per requested user id, in request order (duplicates answered twice)."""
    unknown_exclude: list[str] = []


class SimilarResponse(BaseModel):
    item_id: str
    model_version: str
    k: int
    exact: bool
    items: list[RecommendedItem]
    """Nearest items by inner product of item embeddings; never the item itself."""


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    index_backend: str
    index_kind: str
    n_users: int
    n_items: int


class SpectrumStats(BaseModel):
    """trainer.spectrum.spectrum_stats of one matrix."""

    dim: int
    singular_values: list[float]
    """Descending."""
    singular_values_normalized: list[float]
    """singular_values / singular_values[0] (what ?format=svg plots, log scale)."""
    effective_rank: float
    """exp(entropy of sv / sum(sv)), in [1, dim]."""
    effective_rank_ratio: float
    """effective_rank / dim."""
    stable_rank: float
    condition_number: float | None
    """null when the smallest singular value is zero (infinite condition number)."""
    top1_energy: float
    """Share of sum(sv²) in the largest direction."""
    top10_energy: float


class SideSpectrum(SpectrumStats):
    """Stats of the row-L2-normalised embeddings (the collapse measure), plus the raw table's."""

    basis: Literal["row_normalized"] = "row_normalized"
    rows: int
    raw: SpectrumStats
    """The same statistics for the raw (un-normalised) embedding table."""
    verdict: Literal["healthy", "partial collapse", "collapsed"]


class ModelSpectrum(BaseModel):
    model_version: str
    verdict: Literal["healthy", "partial collapse", "collapsed"]
    """The worse of the users' and items' verdicts."""
    users: SideSpectrum
    items: SideSpectrum
    all: SideSpectrum
    """Users and items stacked (the reference code's effective rank); not used by the verdict."""


class SpectrumThresholds(BaseModel):
    metric: str
    healthy_min: float
    """effective_rank_ratio >= healthy_min: healthy."""
    collapsed_below: float
    """effective_rank_ratio < collapsed_below: collapsed; in between: partial collapse."""


class SpectrumResponse(ModelSpectrum):
    thresholds: SpectrumThresholds
    previous: ModelSpectrum | None
    """The model served before this one (null when there was none)."""


class ModelVersionInfo(BaseModel):
    version: str
    created_at: str | None = None
    current: bool
    """CURRENT points here."""
    previous: bool
    serving: bool
    """This process answers with it now."""
    shape: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    config: dict[str, Any] = {}
    effective_rank: dict[str, float] = {}
    """Normalised effective rank of users and items from the manifest's spectrum, if present."""
    refused: str | None = None
    """Why this process refused to serve it, if it did."""


class ModelsResponse(BaseModel):
    current: str | None
    previous: str | None
    serving: str | None
    versions: list[ModelVersionInfo]
    """Oldest first."""


class ActivateResponse(BaseModel):
    version: str
    serving: str
    previous: str | None
    """The version served before the switch."""
