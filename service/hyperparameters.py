"""The ``hyperparameters`` of POST /retrain, generated from ``contract.config.TrainConfig``.

Every TrainConfig field a job may set, optional (absent or null: the objective's default), with
TrainConfig's type, range and docstring, so that the OpenAPI schema says what is accepted;
TrainConfig still validates the merged config before a job is queued. Not settable here:
``encoder`` and ``objective`` (fields of the request: they choose the defaults these override)
and the worker's ``device`` and ``num_threads`` (``contract.jobspec.RESERVED_FIELDS``).

TrainConfig's cross-field rules go into the schema too (``ADAPTIVE_TAU_RULE`` and
``SPARSE_ADAM_DECAY_RULE`` here; ``REQUEST_RULES`` on the request, where the objective's and
encoder's defaults are known), except "early_stop_metric's K is in ks", which depends on
defaults a schema cannot see. So that no rule is left outside the schema, ``NARROWER`` (the one
place where this module departs from TrainConfig) makes ``ks`` always hold 10 and 20 (distinct,
at most 16) and ``early_stop_metric`` one of recall/ndcg at 10 or 20, so the metric is always
evaluated; ``seed`` stays a JSON-exact integer.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import JsonDict, JsonValue

from contract.config import ADAPTIVE_TAU_RULE, SPARSE_ADAM_DECAY_RULE, optional_fields
from contract.jobspec import RESERVED_FIELDS
from service.schemas import JSON_INT_MAX

#: TrainConfig fields that are not hyperparameters of a job (see the module docstring).
NOT_HYPERPARAMETERS = frozenset({"encoder", "objective", *RESERVED_FIELDS})
#: Cut-offs every job evaluates: those of the early-stopping metrics (default recall@20).
REQUIRED_KS = (10, 20)
EARLY_STOP_METRICS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in REQUIRED_KS)


def _check_ks(ks: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks {list(ks)} has duplicates")
    missing = [k for k in REQUIRED_KS if k not in ks]
    if missing:
        raise ValueError(f"ks {list(ks)} must include {list(REQUIRED_KS)} (missing {missing})")
    return ks


def _check_metric(metric: str) -> str:
    if metric not in EARLY_STOP_METRICS:
        raise ValueError(f"early_stop_metric {metric!r} is not one of {list(EARLY_STOP_METRICS)}")
    return metric


#: Where a job's hyperparameters are narrower than TrainConfig (see the module docstring).
NARROWER: dict[str, tuple[Any, ...]] = {
    "ks": (
        Field(
            min_length=len(REQUIRED_KS),
            max_length=16,
            json_schema_extra={
                "uniqueItems": True,
                "allOf": [{"contains": {"const": k}} for k in REQUIRED_KS],
            },
        ),
        AfterValidator(_check_ks),
    ),
    "early_stop_metric": (
        Field(json_schema_extra={"enum": list(EARLY_STOP_METRICS)}),
        AfterValidator(_check_metric),
    ),
    "seed": (Field(le=JSON_INT_MAX),),
}


class _HyperparametersBase(BaseModel):
    """TrainConfig overrides (absent or null: the objective's default); see TrainConfig."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"allOf": [ADAPTIVE_TAU_RULE, SPARSE_ADAM_DECAY_RULE]},
    )

    @model_validator(mode="before")
    @classmethod
    def _explain_refused_names(cls, data: Any) -> Any:
        names = set(data) if isinstance(data, dict) else set()
        if reserved := sorted(RESERVED_FIELDS & names):
            raise ValueError(f"hyperparameters: {reserved} are set by the worker, not by a job")
        if top := sorted((NOT_HYPERPARAMETERS - RESERVED_FIELDS) & names):
            raise ValueError(f"hyperparameters: {top} are fields of the request itself")
        return data


Hyperparameters = create_model(
    "Hyperparameters",
    __base__=_HyperparametersBase,
    __doc__=_HyperparametersBase.__doc__,
    __module__=__name__,
    **optional_fields(NOT_HYPERPARAMETERS, narrow=NARROWER),
)

#: bpr trains on pairs: TrainConfig refuses sampler "user" with it.
BPR_NEEDS_PAIRS: JsonDict = {
    "if": {"required": ["objective"], "properties": {"objective": {"const": "bpr"}}},
    "then": {
        "properties": {"hyperparameters": {"properties": {"sampler": {"not": {"const": "user"}}}}}
    },
}

#: TrainConfig refuses optimizer "sparse_adam" with encoder "lightgcn" (it updates every row).
SPARSE_ADAM_NEEDS_MF: JsonDict = {
    "if": {"required": ["encoder"], "properties": {"encoder": {"const": "lightgcn"}}},
    "then": {
        "properties": {
            "hyperparameters": {"properties": {"optimizer": {"not": {"const": "sparse_adam"}}}}
        }
    },
}

#: TrainConfig refuses a weight_decay (other than 0) with optimizer "sparse_adam": given (the
#: Hyperparameters' own SPARSE_ADAM_DECAY_RULE) or, when no optimizer is given, the default of
#: bpr and directau on MF (``default_synthetic_config``; encoder null: mf).
SPARSE_ADAM_BY_DEFAULT: JsonDict = {
    "if": {
        "required": ["objective"],
        "properties": {
            "objective": {"enum": ["bpr", "directau"]},
            "encoder": {"not": {"const": "lightgcn"}},
        },
    },
    "then": {
        "properties": {
            "hyperparameters": {
                "anyOf": [
                    {"required": ["optimizer"], "properties": {"optimizer": {"type": "string"}}},
                    {"properties": {"weight_decay": {"maximum": 0}}},
                ]
            }
        }
    },
}

#: TrainConfig refuses a blend_weight unless the objective is "blend" (absent: directspec+).
BLEND_WEIGHT_NEEDS_BLEND: JsonDict = {
    "if": {"not": {"required": ["objective"], "properties": {"objective": {"const": "blend"}}}},
    "then": {"properties": {"hyperparameters": {"properties": {"blend_weight": {"type": "null"}}}}},
}

#: Every cross-field rule of the request (RetrainRequest's ``allOf``).
REQUEST_RULES: list[JsonValue] = [
    BPR_NEEDS_PAIRS,
    SPARSE_ADAM_NEEDS_MF,
    SPARSE_ADAM_BY_DEFAULT,
    BLEND_WEIGHT_NEEDS_BLEND,
]
