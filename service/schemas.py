"""Request and response bodies (pydantic), documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints, WithJsonSchema

from contract.ids import ID_MAX_LEN, ID_PATTERN, ID_RULE
from service.errors import ErrorBody

# ---- ids (contract.ids): bodies (pydantic), hand-parsed paths/queries and OpenAPI -------------
ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": ID_MAX_LEN,
    "pattern": ID_PATTERN,
    "description": f"A user or item id: {ID_RULE}",
}
"""OpenAPI schema of a user or item id (ExternalId), served or ingested."""
ExternalId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LEN, pattern=ID_PATTERN)
]

Verdict = Literal["healthy", "partial collapse", "collapsed"]
"""The spectrum verdict of one side (service/spectrum_view.py decides it)."""

# ---- integers of strict JSON bodies --------------------------------------------------------
JSON_INT_MAX = 2**53 - 1
"""The largest integer every JSON reader holds exactly (and JSON Schema validators compare)."""


def _whole_float_as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le] of a strict body; ``3.0`` is one too, as for JSON Schema."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_whole_float_as_int)]


INT_ID_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": JSON_INT_MAX}
"""A non-negative integer id (LightGCN-style datasets number their users and items)."""


def _int_id_as_str(v: Any) -> Any:
    v = _whole_float_as_int(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= JSON_INT_MAX:
        return str(v)
    return v  # anything else meets ExternalId's strict string check


JsonId = Annotated[
    ExternalId,
    BeforeValidator(_int_id_as_str),
    WithJsonSchema({"anyOf": [ID_SCHEMA, INT_ID_SCHEMA]}),
]
"""An id in a JSON body: a string, or an integer (INT_ID_SCHEMA) used as its decimal string."""

Fallback = Literal["popular"]

AnswerSource = Literal["model", "fold-in", "popular"]
"""How a user was answered: ``model`` (the trained vector), ``fold-in`` (a vector folded in from
interactions the model was not trained on: a new user's, a known user's newest, or a
``history``; docs/method.md, "Fold-in") or ``popular`` (the fallback)."""


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    """Inner product of user and item embeddings; for the popular fallback, the number of
    known interactions of the item (the model's train and test pairs)."""
    rank: int
    """1 for the best item (offset + 1 for the first item of a page)."""


class RecommendResponse(BaseModel):
    user_id: str
    model_version: str
    k: int
    items: list[RecommendedItem]
    """At most k items, best first (ranks continue after ``offset``); fewer only with a
    ``short`` reason."""
    source: AnswerSource
    """``model``, ``fold-in`` (the user's ingested interactions the model was not trained on
    are folded in) or ``popular`` (the fallback)."""
    fallback: Fallback | None = None
    """``popular`` when the user is unknown and ``fallback=popular`` was asked for."""
    exact: bool
    """True when the index is exact (flat); False for IVF/HNSW."""
    unknown_exclude: list[str] = []
    """Ids in ``exclude`` that are not in the catalogue (ignored)."""
    unknown_include: list[str] | None = None
    """Ids in ``include`` that are not in the catalogue (ignored); present only when
    ``include`` was given."""
    short: str | None = None
    """Present only when fewer than k items came back, saying why: the ``include`` set or the
    catalogue has fewer rankable items after exclusions (e.g. ``include has 3 rankable items
    after exclusions``), ``offset`` is past them, or the ranking stops at depth max_k."""


class BatchUserResult(BaseModel):
    user_id: str | None
    """The requested user; null for the anonymous user of a ``history`` request."""
    items: list[RecommendedItem]
    """Empty when ``error`` is set."""
    source: AnswerSource | None = None
    """``model``, ``fold-in`` or ``popular``; null when ``error`` is set."""
    fallback: Fallback | None = None
    error: ErrorBody | None = None
    """Set for an unknown user without fallback (code ``unknown_user``), or a ``history``
    without a catalogue item (code ``unknown_history``); the batch still succeeds."""
    short: str | None = None
    """Present only when fewer than k items came back, saying why: the ``include`` set or the
    catalogue has fewer rankable items after exclusions (e.g. ``include has 3 rankable items
    after exclusions``), ``offset`` is past them, or the ranking stops at depth max_k."""


class BatchRecommendResponse(BaseModel):
    model_version: str
    k: int
    exact: bool
    results: list[BatchUserResult]
    """One entry per requested user id, in request order (duplicates answered twice)."""
    unknown_exclude: list[str] = []
    unknown_include: list[str] | None = None
    """Ids in ``include`` that are not in the catalogue (ignored); present only when
    ``include`` was given."""
    unknown_history: list[str] | None = None
    """Ids in ``history`` that are not in the catalogue (ignored); present only when
    ``history`` was given."""


class SimilarResponse(BaseModel):
    item_id: str
    model_version: str
    k: int
    exact: bool
    items: list[RecommendedItem]
    """Nearest items by inner product of item embeddings; never the item itself, nor the
    ``user_id``'s seen items when given (every interaction known for the user)."""
    unknown_include: list[str] | None = None
    """Ids in ``include`` that are not in the catalogue (ignored); present only when
    ``include`` was given."""
    short: str | None = None
    """Present only when fewer than k items came back, saying why: the ``include`` set or the
    catalogue has fewer rankable items after exclusions (e.g. ``include has 3 rankable items
    after exclusions``), ``offset`` is past them, or the ranking stops at depth max_k."""


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    index_backend: str
    index_kind: str
    """``flat`` (exact), ``ivf`` or ``hnsw``; ``filter`` / ``blend`` for those models."""
    index_source: Literal["artifact", "built at load"] = "built at load"
    """``artifact``: the index chosen and built at publish, loaded as shipped."""
    index_recall: float | None = None
    """Recall@20 against exact search: 1.0 for exact search, the value measured at publish
    for a shipped index, null when not measured (an approximate index built at load)."""
    n_users: int
    n_items: int


class SpectrumStats(BaseModel):
    """contract.spectrum.spectrum_stats of one matrix."""

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
    verdict: Verdict


class ModelSpectrum(BaseModel):
    model_version: str
    verdict: Verdict
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


class FilterResponse(BaseModel):
    linear: list[float]
    """The linear (item-item) part's gain at each kept frequency: (σ_k / σ_1)²."""
    total: list[float]
    """Linear part plus the ideal low-pass weight α."""


class FilterSpectrum(BaseModel):
    """A spectral-filter model: the spectrum of its normalised interaction matrix R̃ that the
    low-pass part keeps, and the filter's response over it."""

    kind: Literal["spectral"] = "spectral"
    alpha: float
    blend_weight: float | None = None
    """A blend's β (z(filter) + β · z(DirectSpec+)); null for the filter alone."""
    singular_values: list[float]
    """Top-K singular values of R̃, descending."""
    response: FilterResponse


class SpectrumResponse(ModelSpectrum):
    thresholds: SpectrumThresholds
    previous: ModelSpectrum | None
    """The model served before this one (null when there was none)."""
    filter: FilterSpectrum | None = None
    """The serving model's filter, when it is a spectral-filter model or a blend (null
    otherwise)."""


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
    trained_on: dict[str, Any] | None = None
    """Which pairs the embeddings were fitted on (the manifest's ``trained_on``: ``pairs``
    "all" for a refit on train and test, "train" for the evaluation run; ``n_pairs``,
    ``epochs``, ``evaluated_on``); ``metrics`` are always the evaluation run's. Null for an
    older model (fitted on its training pairs)."""
    index: dict[str, Any] | None = None
    """The item index chosen at publish (the manifest's ``index``: ``kind``, ``params``,
    ``target``, measured ``recall``, ``p50_ms`` / ``exact_p50_ms``, ``reason``,
    ``candidates``); null for an older model, a filter or a blend."""
    model: dict[str, Any] = {}
    """What kind of model it is (the manifest's ``model``): ``kind`` "embedding", "spectral"
    or "blend", and the filter's ``spectral_k`` / ``spectral_alpha``, a blend's
    ``blend_weight`` and how it was chosen (``blend_selection``)."""
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
