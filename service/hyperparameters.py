"""The ``hyperparameters`` of POST /retrain: TrainConfig fields a job may set, with their ranges.

Types and ranges are those ``contract.config.TrainConfig.validate`` enforces, so that the OpenAPI
schema says what is accepted; TrainConfig still validates the merged config before a job is
queued. A few are narrower, so that no rule is left outside the schema: ``ks`` always holds 10
and 20 (distinct, at most 16) and ``early_stop_metric`` is one of recall/ndcg at 10 or 20, so the
metric is always evaluated; ``seed`` stays a JSON-exact integer. The other cross-field rules are
in the schema too (``allOf``). Not settable here: ``encoder`` and ``objective`` (fields of the
request: they choose the defaults these override) and the worker's ``device`` and
``num_threads``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contract.config import Init, Optimizer, RecallConvention, Sampler
from contract.jobspec import RESERVED_FIELDS
from service.schemas import JSON_INT_MAX, json_int

#: TrainConfig fields that are not hyperparameters of a job (see the module docstring).
NOT_HYPERPARAMETERS = frozenset({"encoder", "objective", *RESERVED_FIELDS})
#: Cut-offs every job evaluates: those of the early-stopping metrics (default recall@20).
REQUIRED_KS = (10, 20)

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = json_int(1, 100_000)


def _check_ks(ks: list[int]) -> list[int]:
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks {ks} has duplicates")
    missing = [k for k in REQUIRED_KS if k not in ks]
    if missing:
        raise ValueError(f"ks {ks} must include {list(REQUIRED_KS)} (missing {missing})")
    return ks


Ks = Annotated[
    list[json_int(1, 1000)],
    Field(
        min_length=len(REQUIRED_KS),
        max_length=16,
        json_schema_extra={
            "uniqueItems": True,
            "allOf": [{"contains": {"const": k}} for k in REQUIRED_KS],
        },
    ),
    AfterValidator(_check_ks),
]

# TrainConfig raises "tau0: defaults to tau - 0.5 ..., must be > 0" otherwise.
_ADAPTIVE_TAU_NEEDS_TAU0_OR_TAU_ABOVE_HALF = {
    "if": {
        "required": ["adaptive_tau", "tau"],
        "properties": {
            "adaptive_tau": {"const": True},
            "tau": {"type": "number"},
            "tau0": {"type": "null"},
        },
    },
    "then": {"properties": {"tau": {"exclusiveMinimum": 0.5}}},
}


class Hyperparameters(BaseModel):
    """TrainConfig overrides (absent or null: the objective's default); see TrainConfig."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        json_schema_extra={"allOf": [_ADAPTIVE_TAU_NEEDS_TAU0_OR_TAU_ABOVE_HALF]},
    )

    dim: json_int(1, 4096) | None = None
    """Embedding dimension d."""
    n_layers: json_int(1, 8) | None = None
    """LightGCN propagation layers (ignored by MF)."""
    init: Init | None = None
    """Initial tables: xavier, or normal N(0, init_std²)."""
    init_std: Positive | None = None
    epochs: Count | None = None
    """Overrides the request's ``epochs``."""
    batch_size: json_int(2, 1 << 20) | None = None
    sampler: Sampler | None = None
    """``user`` (DirectSpec family) or ``pair``; bpr needs ``pair``."""
    optimizer: Optimizer | None = None
    lr: Positive | None = None
    lr_decay: Annotated[float, Field(gt=0, le=1)] | None = None
    """Per-epoch multiplicative decay; 1 = constant."""
    weight_decay: NonNegative | None = None
    reg: NonNegative | None = None
    alpha: NonNegative | None = None
    """Strength of the balancing step (0 = alignment only)."""
    tau: Positive | None = None
    """DirectSpec+ temperature; with adaptive_tau and no tau0 it must exceed 0.5."""
    adaptive_tau: bool | None = None
    tau0: Positive | None = None
    """Temperature of related pairs (default tau - 0.5)."""
    tau1: Positive | None = None
    """Temperature of unrelated pairs (default tau)."""
    shrink_norm: NonNegative | None = None
    gamma: NonNegative | None = None
    """DirectAU uniformity weight."""
    uniformity_t: Positive | None = None
    eval_every: Count | None = None
    ks: Ks | None = None
    """Recall/NDCG cut-offs, distinct; 10 and 20 always among them."""
    recall_convention: RecallConvention | None = None
    early_stop_patience: json_int(0, 100_000) | None = None
    """Evaluations without improvement before stopping (0 = off)."""
    early_stop_metric: Literal["recall@10", "recall@20", "ndcg@10", "ndcg@20"] | None = None
    val_fraction: Annotated[float, Field(gt=0, le=0.5)] | None = None
    """Share of each user's training pairs held out for early stopping."""
    seed: json_int(0, JSON_INT_MAX) | None = None

    @model_validator(mode="before")
    @classmethod
    def _explain_refused_names(cls, data: Any) -> Any:
        names = set(data) if isinstance(data, dict) else set()
        if reserved := sorted(RESERVED_FIELDS & names):
            raise ValueError(f"hyperparameters: {reserved} are set by the worker, not by a job")
        if top := sorted((NOT_HYPERPARAMETERS - RESERVED_FIELDS) & names):
            raise ValueError(f"hyperparameters: {top} are fields of the request itself")
        return data


#: bpr trains on pairs: TrainConfig refuses sampler "user" with it.
BPR_NEEDS_PAIRS = {
    "if": {"required": ["objective"], "properties": {"objective": {"const": "bpr"}}},
    "then": {
        "properties": {"hyperparameters": {"properties": {"sampler": {"not": {"const": "user"}}}}}
    },
}
