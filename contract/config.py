"""Training hyper-parameters: one frozen pydantic model, validated on construction.

``TrainConfig``'s fields are the one definition of a training run's hyper-parameters: their
types, their ranges (Field constraints), the cross-field rules (a model validator) and their
docstrings (the help text). ``specrec-train``'s options (trainer/cli.py) and the JSON schema of
POST /retrain's ``hyperparameters`` (service/hyperparameters.py) are generated from them with
``optional_fields``.

``TrainConfig.defaults(objective, encoder, **overrides)`` gives the per-objective defaults: the
reference ones for the DirectSpec family (docs/directspec.md; the CiteULike set is the generic
default), LightGCN's for BPR, DirectAU's for DirectAU. ``dataset_config(dataset, objective,
encoder)`` adds the dataset's own defaults (``DATASET_DEFAULTS``, the one table: the synthetic
default dataset's short schedules) and is what every entry point trains with. ``to_dict()``
goes into the model manifest; ``from_dict()`` reads it back (unknown keys are an error).
Invalid values raise ``ConfigError`` with a one-line message naming the field and what it
accepts.

No torch import here: the config is also read by processes that never train.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from contract import layout

Encoder = Literal["mf", "lightgcn"]
Objective = Literal["directspec", "directspec+", "bpr", "directau", "align", "spectral", "blend"]
"""What a run fits: a DirectSpec-family or baseline embedding objective (trained),
"spectral", the training-free GF-CF filter (contract/spectral.py; no epochs), or "blend":
DirectSpec+ and the filter, their per-user standardised scores summed with the weight
``blend_weight`` (contract/blend.py)."""
Optimizer = Literal["sgd", "adam", "sparse_adam"]
Sampler = Literal["user", "pair"]
Init = Literal["xavier", "normal"]
RecallConvention = Literal["lightgcn", "reference"]
WorldLrScaling = Literal["linear", "none"]

DIRECTSPEC_FAMILY = ("directspec", "directspec+", "align")
Preset = Literal[
    "gowalla-reference", "gowalla-fast", "gowalla-blend", "gowalla-blend-fast", "citeulike-blend"
]
PRESETS: dict[str, dict[str, Any]] = {
    # the DirectSpec reference set for Gowalla (the defaults are CiteULike's): Recall@20 0.1779
    # after 300 MF epochs, a plateau from ~125 (docs/benchmarks.md)
    "gowalla-reference": {"lr": 200.0, "alpha": 0.7, "tau": 4.0, "shrink_norm": 0.02},
    # the same with a 5x larger lr and norm scale: chosen on a validation split (4 epochs:
    # Recall@20 0.171 vs 0.007), test 0.151 after 4 epochs (~32 s of training on one core)
    "gowalla-fast": {"lr": 1000.0, "alpha": 0.7, "tau": 4.0, "shrink_norm": 0.1},
    # objective "blend": gowalla-fast's DirectSpec+ for 20 epochs, blended with the filter at
    # the weight chosen on a validation split (docs/results/blend.json: 0.2192 at 1.6 vs the
    # filter's 0.2129); Gowalla test Recall@20 0.1915 (the filter alone: 0.1857)
    "gowalla-blend": {
        "lr": 1000.0,
        "alpha": 0.7,
        "tau": 4.0,
        "shrink_norm": 0.1,
        "epochs": 20,
        "blend_weight": 1.6,
    },
    # the same with 5 epochs, Recall@20 >= 0.18 within minutes: the weight chosen on
    # validation for 5 epochs (docs/results/blend.json: 0.2159 at 0.8 vs the filter's 0.2129),
    # Gowalla test Recall@20 0.1880
    "gowalla-blend-fast": {
        "lr": 1000.0,
        "alpha": 0.7,
        "tau": 4.0,
        "shrink_norm": 0.1,
        "epochs": 5,
        "blend_weight": 0.8,
    },
    # objective "blend" on CiteULike: the reference DirectSpec+ (the defaults, 300 epochs) and
    # the weight chosen on validation (0.2779 at 1.2 vs the filter's 0.2702); test Recall@20
    # 0.2954 against the filter's 0.2898 (docs/results/blend.json)
    "citeulike-blend": {"blend_weight": 1.2},
}
"""Named hyper-parameter sets (TrainConfig.defaults(..., preset=), specrec-train --preset)."""


class ConfigError(ValueError):
    """An invalid hyper-parameter; the message names the field and the expected range."""


def _whole_float_as_int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _list_as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


Int = Annotated[int, BeforeValidator(_whole_float_as_int)]
"""An integer (never a bool); ``3.0`` is one too, as in JSON Schema. Its range goes in the
field's ``Field(...)``: a constraint annotated after the validator is missing from the schema."""
_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)

#: The cross-field rule "adaptive_tau needs tau0 > 0" (see ``_cross_field_rules``) in JSON
#: Schema, for a document where absent fields keep their defaults (adaptive_tau off, tau > 0.5).
ADAPTIVE_TAU_RULE: dict[str, Any] = {
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

#: The cross-field rule "sparse_adam takes no weight_decay" in JSON Schema (``maximum`` leaves a
#: null, "the default 0", valid).
SPARSE_ADAM_DECAY_RULE: dict[str, Any] = {
    "if": {"required": ["optimizer"], "properties": {"optimizer": {"const": "sparse_adam"}}},
    "then": {"properties": {"weight_decay": {"maximum": 0}}},
}


class TrainConfig(BaseModel):
    """Everything that determines a training run (besides the data and the seed's luck)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        json_schema_extra={"allOf": [ADAPTIVE_TAU_RULE, SPARSE_ADAM_DECAY_RULE]},
    )

    # --- model ---------------------------------------------------------------------------
    encoder: Encoder = "mf"
    """"mf": two embedding tables; "lightgcn": K-layer propagation over the train graph."""
    objective: Objective = "directspec+"
    """"directspec" (linear all-pass), "directspec+" (softmax, self-paced), "bpr",
    "directau" (alignment + uniformity), "align" (alignment only: the collapsed baseline)."""
    dim: Int = Field(64, ge=1, le=4096)
    """Embedding dimension d (columns)."""
    n_layers: Int = Field(3, ge=1, le=8)
    """LightGCN propagation layers K (ignored by MF)."""
    init: Init = "xavier"
    """Initial tables: "xavier" U(+-sqrt(6/(rows+d))) (reference), "normal" N(0, init_std^2)."""
    init_std: float = Field(0.1, gt=0)
    """Standard deviation of the "normal" init (embedding units)."""

    # --- optimisation --------------------------------------------------------------------
    epochs: Int = Field(300, ge=1, le=100_000)
    """Passes over the data; one epoch = n_train // batch_size steps."""
    batch_size: Int = Field(256, ge=2, le=1 << 20)
    """Rows per batch B (users for the DirectSpec family, pairs otherwise); the loss (and the
    balancing) is computed per batch."""
    sub_batches: Int = Field(1, ge=1, le=1024)
    """Batches per optimiser step: their losses are summed into one step. LightGCN propagates
    once per step, so S batches cost about one propagation instead of S (an epoch still
    sees n_train // B batches, in n_train // (B * S) steps)."""
    sampler: Sampler = "user"
    """"user": B users uniformly with replacement, one random training item each (reference);
    "pair": B training pairs uniformly (BPR/DirectAU); bpr needs "pair"."""
    optimizer: Optimizer = "sgd"
    """"sgd" (plain SGD on the raw tables, the reference), "adam", or "sparse_adam" (MF only,
    no weight_decay: dense Adam's updates computed on the rows a batch touches, the other
    rows' momentum steps deferred until they are read; ~2x faster per Gowalla epoch)."""
    lr: float = Field(180.0, gt=0)
    """Learning rate (per step; SGD lr is huge because the loss sees normalised vectors)."""
    lr_decay: float = Field(0.9995, gt=0, le=1)
    """Multiplicative lr decay applied after every epoch; 1 = constant."""
    world_lr_scaling: WorldLrScaling = "linear"
    """Data-parallel runs (W ranks average their gradients): "linear" multiplies lr by W, so
    a step of W averaged batches moves the rows as W one-rank steps would (plain SGD: the
    sum of the W gradients) and quality per epoch is kept; "none" keeps lr as given."""
    weight_decay: float = Field(0.0, ge=0)
    """Optimiser L2 weight decay on all parameters. Non-zero disables sparse updates."""
    reg: float = Field(0.0, ge=0)
    """Loss-term L2 coefficient. BPR: reg * (|u|^2+|i|^2+|j|^2)/(2B) on layer-0 rows;
    DirectSpec family: reg * mean(|z|^2 + |w|^2) on the transformed rows (LightGCN reference)."""

    # --- DirectSpec / DirectSpec+ ---------------------------------------------------------
    alpha: float = Field(1.0, ge=0)
    """Strength of the balancing step (0 = alignment only)."""
    tau: float = Field(3.0, gt=0)
    """DirectSpec+ softmax temperature multiplier on cosine similarities; with adaptive_tau
    and no tau0 it must exceed 0.5."""
    adaptive_tau: bool = False
    """Use tau0 for pairs that share a training neighbour and tau1 otherwise."""
    tau0: Annotated[float, Field(gt=0)] | None = None
    """Temperature for related pairs; default tau - 0.5."""
    tau1: Annotated[float, Field(gt=0)] | None = None
    """Temperature for unrelated pairs; default tau."""
    shrink_norm: float = Field(0.03, ge=0)
    """Norm scaling s: z = s * |x~| * x~ (0 = off)."""

    # --- DirectAU ------------------------------------------------------------------------
    gamma: float = Field(1.0, ge=0)
    """Weight of the uniformity term."""
    uniformity_t: float = Field(2.0, gt=0)
    """Uniformity temperature t in exp(-t |x - y|^2)."""

    # --- the spectral filter (objective "spectral") --------------------------------------
    spectral_k: Int = Field(256, ge=1, le=4096)
    """Singular vectors of the normalised matrix kept by the ideal low-pass part (K)."""
    spectral_alpha: float = Field(0.2, ge=0)
    """Weight of the ideal low-pass part beside the linear item-item part (0 = linear only)."""
    spectral_solver: Literal["randomized", "arpack"] = "randomized"
    """How the top-K singular vectors are found: "randomized" (seeded randomized SVD, K + 64
    probes, 4 power iterations; seconds on Gowalla) or "arpack" (scipy's svds, exact)."""

    # --- the blend (objective "blend") ---------------------------------------------------
    blend_weight: Annotated[float, Field(ge=0, le=1000)] | None = None
    """beta in z(filter) + beta * z(DirectSpec+), each score row standardised per user; None:
    chosen on a validation split carved from the training pairs (trainer/blend.py)."""

    # --- evaluation & control ------------------------------------------------------------
    eval_every: Int = Field(10, ge=1, le=100_000)
    """Evaluate (metrics + spectrum) every this many epochs (and after the last)."""
    ks: Annotated[
        tuple[Annotated[int, Field(ge=1, le=1000), BeforeValidator(_whole_float_as_int)], ...],
        BeforeValidator(_list_as_tuple),
    ] = Field((10, 20), min_length=1)
    """Cut-offs K for Recall@K / NDCG@K."""
    recall_convention: RecallConvention = "lightgcn"
    """"lightgcn": hits@K/|T|; "reference": hits@K/min(K,|T|) (DirectSpec code, higher)."""
    early_stop_patience: Int = Field(0, ge=0, le=100_000)
    """Stop after this many evaluations without improvement on a validation split (0 = off)."""
    early_stop_metric: str = Field("recall@20", pattern=r"^(recall|ndcg)@\d+$")
    """Validation metric to maximise for early stopping, "recall@K" or "ndcg@K" with K in ks."""
    early_stop_min_delta: float = Field(0.0, ge=0, le=1)
    """Early stopping counts an evaluation as an improvement only when it beats the best by
    more than this (absolute; 0 = any increase); the best embeddings are those of the last
    such improvement (Keras's EarlyStopping min_delta)."""
    val_fraction: float = Field(0.1, gt=0, le=0.5)
    """Share of each user's training pairs held out for early stopping."""
    seed: Int = Field(0, ge=0, le=2**63 - 1)
    """Seed for init and sampling; CPU runs are bit-reproducible."""
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|mps)$")] | None = None
    """"cpu", "cuda", "cuda:N", "mps" or None/"auto" (SPECREC_DEVICE, else CUDA if present,
    else CPU)."""
    num_threads: Int = Field(0, ge=0, le=1024)
    """CPU threads for torch during fit (0 = auto: 1 on CPU, fastest for MF and robust when
    the CPU is shared; LightGCN's propagation runs ~1.8x faster on 2 threads of an idle
    2-core machine, 8x slower when the cores are busy)."""

    def __init__(self, /, **data: Any) -> None:
        """Validate ``data``; ConfigError (one line per problem, "; "-joined) if invalid."""
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(describe_errors(e, data)) from None

    @field_validator("device", mode="before")
    @classmethod
    def _auto_device(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainConfig:
        if self.adaptive_tau and self.tau_related <= 0:
            raise ValueError(f"tau0: defaults to tau - 0.5 = {self.tau_related}, must be > 0")
        k = self.early_stop_metric.partition("@")[2]
        if int(k) not in self.ks:
            raise ValueError(
                f"early_stop_metric: {self.early_stop_metric!r}, expected recall@K or ndcg@K "
                f"with K in ks {list(self.ks)}"
            )
        if self.optimizer == "sparse_adam" and self.encoder != "mf":
            raise ValueError(
                f"optimizer: 'sparse_adam' needs encoder 'mf' ({self.encoder!r} updates every "
                "row at each step), use 'adam'"
            )
        if self.optimizer == "sparse_adam" and self.weight_decay:
            raise ValueError(
                "weight_decay: sparse_adam takes no weight decay (it would touch every row), "
                "use reg"
            )
        if self.blend_weight is not None and self.objective != "blend":
            raise ValueError(
                f"blend_weight: applies to objective 'blend' only, not {self.objective!r}"
            )
        if self.objective == "bpr" and self.sampler != "pair":
            raise ValueError(f"sampler: {self.sampler!r} is not supported for bpr, expected 'pair'")
        return self

    # ------------------------------------------------------------------------------------
    @property
    def tau_related(self) -> float:
        """tau0 with its default applied."""
        return self.tau0 if self.tau0 is not None else self.tau - 0.5

    @property
    def tau_unrelated(self) -> float:
        """tau1 with its default applied."""
        return self.tau1 if self.tau1 is not None else self.tau

    @property
    def balancing(self) -> str:
        """Which transform the objective applies: "directspec+", "directspec" or "none"."""
        return {"directspec+": "directspec+", "directspec": "directspec"}.get(
            self.objective, "none"
        )

    # ------------------------------------------------------------------------------------
    @classmethod
    def defaults(
        cls,
        objective: Objective = "directspec+",
        encoder: Encoder = "mf",
        *,
        preset: Preset | None = None,
        **overrides: Any,
    ) -> TrainConfig:
        """Per-objective defaults for `encoder`, then the named `preset` (PRESETS), then
        `overrides` (field=value) on top.

        DirectSpec family: the reference CiteULike set (d 64, B 256, SGD lr 180 decayed x0.9995
        per epoch for MF / x0.9999 for LightGCN, Xavier init, alpha 1.0, tau 3.0, shrink_norm
        0.03; LightGCN adds reg 0.01 and 16 batches per propagation); "align" is the same with
        alpha 0, the linear "directspec" uses alpha 0.01 (alpha is not scale-free there). BPR:
        Adam lr 1e-3, L2 1e-4, B 2048, N(0, 0.1) init (LightGCN's; LightGCN: 4 batches per
        step at lr 4e-3). DirectAU: Adam lr 1e-3, gamma 1, t 2. MF's Adam is sparse_adam
        (the same updates, on the batch's rows).
        """
        base: dict[str, Any] = {"objective": objective, "encoder": encoder}
        gcn = encoder == "lightgcn"
        if objective in DIRECTSPEC_FAMILY or objective == "blend":
            base |= {
                "optimizer": "sgd",
                "sampler": "user",
                "init": "xavier",
                "batch_size": 256,
                "lr": 180.0,
                "lr_decay": 0.9999 if gcn else 0.9995,
                # the linear step scales singular values by 1 - alpha sigma^2 with sigma^2 ~ B/d
                # for a balanced batch of B unit rows, so alpha 1 flips and amplifies the top
                # directions (measured: no learning); 0.01 keeps it a contraction
                "alpha": {"align": 0.0, "directspec": 0.01}.get(objective, 1.0),
                "tau": 3.0,
                "shrink_norm": 0.03,
                "reg": 0.01 if gcn else 0.0,
                "epochs": 200 if gcn else 300,
                # one propagation per 16 batches of 256: same Recall@20 at equal epochs on
                # CiteULike (docs/benchmarks.md), ~12x fewer propagations
                "sub_batches": 16 if gcn else 1,
            }
        elif objective == "bpr":
            base |= {
                # sparse_adam: dense Adam's result on the batch's rows only (MF)
                "optimizer": "adam" if gcn else "sparse_adam",
                "sampler": "pair",
                "init": "normal",
                "init_std": 0.1,
                "batch_size": 2048,
                # LightGCN: 4 batches per propagation with 4x the lr (Adam's step does not grow
                # with the summed loss): Recall@20 0.148 vs 0.118 for (1, 1e-3) after 40
                # CiteULike epochs, 3.5x faster per epoch (docs/benchmarks.md)
                "sub_batches": 4 if gcn else 1,
                "lr": 4e-3 if gcn else 1e-3,
                "lr_decay": 1.0,
                "reg": 1e-4,
                "epochs": 300,
            }
        elif objective == "spectral":
            # chosen on validation splits (docs/results/spectral_tuning.json): Gowalla 0.2129
            # (randomized SVD; 0.2126 at the reference 0.3), CiteULike flat over 0.1-0.3
            base |= {"epochs": 1, "spectral_k": 256, "spectral_alpha": 0.2}
        elif objective == "directau":
            base |= {
                "optimizer": "adam" if gcn else "sparse_adam",
                "sampler": "pair",
                "init": "xavier",
                "batch_size": 256,
                "lr": 1e-3,
                "lr_decay": 1.0,
                "gamma": 1.0,
                "uniformity_t": 2.0,
                "reg": 0.0,
                "epochs": 100,
            }
        else:
            raise ConfigError(
                f"objective: {objective!r}, expected one of {list(get_args(Objective))}"
            )
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"preset: {preset!r}, expected one of {list(PRESETS)}")
            base |= PRESETS[preset]
        return cls(**(base | overrides))

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return type(self)(**(self.model_dump() | overrides))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys raise ConfigError."""
        return cls(**data)


# ---- generated from the fields: error messages, optional copies for the CLI and the API -------
def describe_errors(error: ValidationError, data: Mapping[str, Any] | None = None) -> str:
    """A one-line message for a ValidationError of TrainConfig (or of a model whose fields are
    TrainConfig's): each bad field with its value and what it accepts, "; "-joined."""
    data = data or {}
    errors = error.errors()
    parts: list[str] = []
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        parts.append(
            f"unknown config field(s) {unknown}; known: {sorted(TrainConfig.model_fields)}"
        )
    named: set[str] = set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            continue
        if not e["loc"]:  # a model validator's (a cross-field rule): its own message
            cause = (e.get("ctx") or {}).get("error")
            parts.append(str(cause) if cause is not None else e["msg"])
            continue
        name = str(e["loc"][0])
        if name in named:  # one message per field (a tuple reports each bad item)
            continue
        named.add(name)
        value = data.get(name, e["input"]) if isinstance(data, Mapping) else e["input"]
        info = TrainConfig.model_fields.get(name)
        want = expected(info) if info is not None else None
        parts.append(f"{name}: {value!r}, " + (f"expected {want}" if want else e["msg"]))
    return "; ".join(parts) or str(error)


def expected(info: FieldInfo) -> str | None:
    """What a field accepts, in words, from its type and constraints: "an integer in [1, 4096]",
    "a finite number > 0", "one of ['sgd', 'adam']" ... (None for a type it cannot describe)."""
    return _describe(info.annotation, list(info.metadata))


def _describe(tp: Any, metadata: list[Any], plural: bool = False) -> str | None:
    nullable = False
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            metadata = metadata + extra
        elif isinstance(tp, types.UnionType) or get_origin(tp) is typing.Union:
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return None
            nullable, tp = True, members[0]
        else:
            break
    flat: list[Any] = []
    for m in metadata:
        flat.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    bound = {
        key: getattr(m, key)
        for m in flat
        for key in ("gt", "ge", "lt", "le", "min_length", "pattern")
        if getattr(m, key, None) is not None
    }
    if get_origin(tp) is Literal:
        text = f"one of {list(get_args(tp))}"
    elif tp is bool:
        text = "true or false"
    elif tp in (int, float):
        text = _describe_number(tp is int, bound, plural)
    elif tp is str:
        text = f"a string matching {bound['pattern']}" if "pattern" in bound else "a string"
    elif get_origin(tp) in (tuple, list) and get_args(tp):
        item = _describe(get_args(tp)[0], [], plural=True)
        if item is None:
            return None
        n = bound.get("min_length", 0)
        text = f"one or more {item}" if n <= 1 else f"{n} or more {item}"
    else:
        return None
    return f"{text} or None" if nullable else text


def _describe_number(integer: bool, bound: dict[str, Any], plural: bool) -> str:
    if integer:  # an integer range is written closed: [lo, hi]
        lo = bound.get("ge", bound["gt"] + 1 if "gt" in bound else None)
        hi = bound.get("le", bound["lt"] - 1 if "lt" in bound else None)
        bound = {k: v for k, v in (("ge", lo), ("le", hi)) if v is not None}
    lower = next((k for k in ("gt", "ge") if k in bound), None)
    upper = next((k for k in ("lt", "le") if k in bound), None)
    if integer:
        noun = "integers" if plural else "an integer"
    else:  # allow_inf_nan=False: never inf or nan
        noun = "finite numbers" if plural else "a finite number"
    if lower and upper:
        left, right = "(" if lower == "gt" else "[", ")" if upper == "lt" else "]"
        return f"{noun.replace('finite ', '')} in {left}{bound[lower]}, {bound[upper]}{right}"
    side = lower or upper
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return f"{noun} {ops[side]} {bound[side]}" if side else noun


def field_type(name: str, *narrower: Any) -> Any:
    """The constrained type of TrainConfig field ``name`` (``Annotated[type, *constraints]``),
    with ``narrower`` metadata (Field(...), validators) applied on top."""
    info = TrainConfig.model_fields[name]
    metadata = [*info.metadata, *narrower]
    # constraints before validators: a constraint after a validator is not in the JSON schema
    metadata.sort(key=lambda m: isinstance(m, _VALIDATORS))
    return Annotated[(info.annotation, *metadata)] if metadata else info.annotation


def optional_fields(
    exclude: Iterable[str] = (),
    *,
    constraints: bool = True,
    narrow: Mapping[str, tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    """TrainConfig's fields as ``pydantic.create_model`` definitions, each optional (default
    None: "not set"), described by the field's docstring, in field order, minus ``exclude``.

    With ``constraints`` a field keeps its type and ranges (``field_type``, narrowed by
    ``narrow[name]``); without, only its type (a CLI parses strings and leaves the ranges to
    TrainConfig, whose messages name them).
    """
    narrow = narrow or {}
    skip = set(exclude)
    out: dict[str, Any] = {}
    for name, info in TrainConfig.model_fields.items():
        if name in skip:
            continue
        tp: Any = field_type(name, *narrow.get(name, ())) if constraints else info.annotation
        out[name] = (tp | None, Field(None, description=info.description))
    return out


# Short schedules for the embedded synthetic default (3000 users x 2000 items, ~91k training
# pairs), measured on a shared 2-core CPU (docs/benchmarks.md): MF runs take 10-25 s.
_SYNTHETIC: dict[str, dict[str, Any]] = {
    # the CiteULike set (lr 180, shrink_norm 0.03) needs ~10 epochs before it starts to learn;
    # lr 500 and shrink_norm 0.1 make the effective step larger, tau 6 / alpha 0.5 suit the 30
    # planted clusters: Recall@20 ~0.31 after 10 epochs vs popularity 0.14, erank ~56 of 64
    "directspec+": {"epochs": 10, "lr": 500.0, "shrink_norm": 0.1, "tau": 6.0, "alpha": 0.5},
    "directspec": {"epochs": 10, "lr": 500.0, "shrink_norm": 0.1, "alpha": 0.01},  # ~0.32
    "align": {"epochs": 10, "lr": 500.0, "shrink_norm": 0.1},  # collapses to erank ~1
    "bpr": {"epochs": 15, "lr": 0.005},  # ~0.32
    "directau": {"epochs": 10, "lr": 0.005, "gamma": 0.5},  # ~0.18
    "spectral": {},  # no training: the filter's own defaults
}
_SYNTHETIC["blend"] = _SYNTHETIC["directspec+"]  # its embedding part is DirectSpec+


def _synthetic_defaults(objective: Objective, encoder: Encoder) -> dict[str, Any]:
    """The embedded synthetic dataset's schedule (_SYNTHETIC) with an evaluation every 5
    epochs. LightGCN does a full propagation per step (~14 s per epoch on this data on one CPU
    core), so its DirectSpec-family runs are cut to 4 epochs."""
    if objective not in _SYNTHETIC:
        raise ConfigError(f"objective: {objective!r}, expected one of {list(_SYNTHETIC)}")
    base: dict[str, Any] = {"eval_every": 5} | _SYNTHETIC[objective]
    if encoder == "lightgcn" and (objective in DIRECTSPEC_FAMILY or objective == "blend"):
        base |= {"epochs": 4, "eval_every": 2}
    return base


DATASET_DEFAULTS: dict[str, Callable[[Objective, Encoder], dict[str, Any]]] = {
    layout.DEFAULT_DATASET: _synthetic_defaults,
}
"""The one table of per-dataset training defaults, by dataset name (a directory under
``<home>/data``, or the directory specrec-train's ``--data`` names): ``(objective, encoder) ->
TrainConfig fields`` over the objective's defaults. A dataset not listed trains with
``TrainConfig.defaults`` (the reference set, docs/method.md); add a row to give one its own."""


def dataset_config(
    dataset: str | None,
    objective: Objective = "directspec+",
    encoder: Encoder = "mf",
    *,
    preset: Preset | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The config a run of `objective`/`encoder` on `dataset` trains with, whatever starts it
    (specrec-train, POST /retrain, the worker's bootstrap and its scheduled retrains).

    Layers, each over the one before: ``TrainConfig.defaults(objective, encoder)``, the
    dataset's row of DATASET_DEFAULTS (if any), the named `preset` (PRESETS), `overrides`.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset: {preset!r}, expected one of {list(PRESETS)}")
    own = DATASET_DEFAULTS.get(dataset or "")
    base = own(objective, encoder) if own is not None else {}
    chosen = PRESETS[preset] if preset is not None else {}
    return TrainConfig.defaults(objective, encoder, **(base | chosen | overrides))


def default_synthetic_config(
    objective: Objective = "directspec+", encoder: Encoder = "mf", **overrides: Any
) -> TrainConfig:
    """The config `make run` trains on the embedded synthetic default, for any objective:
    ``dataset_config("default", ...)``.

    Defaults to MF-DirectSpec+ (d 64, B 256, plain SGD, Xavier init) re-tuned for a 10-epoch
    budget (see _SYNTHETIC).
    """
    return dataset_config(layout.DEFAULT_DATASET, objective, encoder, **overrides)
