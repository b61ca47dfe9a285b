"""Training hyper-parameters: one frozen dataclass, validated on construction.

``TrainConfig.defaults(objective, encoder, **overrides)`` gives the per-objective defaults: the
reference ones for the DirectSpec family (docs/directspec.md; the CiteULike set is the generic
default), LightGCN's for BPR, DirectAU's for DirectAU. ``to_dict()`` goes into the model
manifest; ``from_dict()`` reads it back (unknown keys are an error).

No torch import here: the config is also read by processes that never train.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

Encoder = Literal["mf", "lightgcn"]
Objective = Literal["directspec", "directspec+", "bpr", "directau", "align"]
Optimizer = Literal["sgd", "adam"]
Sampler = Literal["user", "pair"]
Init = Literal["xavier", "normal"]
RecallConvention = Literal["lightgcn", "reference"]

DIRECTSPEC_FAMILY = ("directspec", "directspec+", "align")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class ConfigError(ValueError):
    """An invalid hyper-parameter; the message names the field and the expected range."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (besides the data and the seed's luck)."""

    # --- model ---------------------------------------------------------------------------
    encoder: Encoder = "mf"
    """"mf": two embedding tables; "lightgcn": K-layer propagation over the train graph."""
    objective: Objective = "directspec+"
    """"directspec" (linear all-pass), "directspec+" (softmax, self-paced), "bpr",
    "directau" (alignment + uniformity), "align" (alignment only: the collapsed baseline)."""
    dim: int = 64
    """Embedding dimension d (columns), 1..4096."""
    n_layers: int = 3
    """LightGCN propagation layers K, 1..8 (ignored by MF)."""
    init: Init = "xavier"
    """Initial tables: "xavier" U(+-sqrt(6/(rows+d))) (reference), "normal" N(0, init_std^2)."""
    init_std: float = 0.1
    """Standard deviation of the "normal" init (embedding units)."""

    # --- optimisation --------------------------------------------------------------------
    epochs: int = 300
    """Passes over the data; one epoch = n_train // batch_size steps. 1..100000."""
    batch_size: int = 256
    """Rows per step B (users for the DirectSpec family, pairs otherwise). 2..1048576."""
    sampler: Sampler = "user"
    """"user": B users uniformly with replacement, one random training item each (reference);
    "pair": B training pairs uniformly (BPR/DirectAU)."""
    optimizer: Optimizer = "sgd"
    """"sgd" (plain SGD on the raw tables, the reference) or "adam"."""
    lr: float = 180.0
    """Learning rate (per step; SGD lr is huge because the loss sees normalised vectors)."""
    lr_decay: float = 0.9995
    """Multiplicative lr decay applied after every epoch, in (0, 1]; 1 = constant."""
    weight_decay: float = 0.0
    """Optimiser L2 weight decay on all parameters (>= 0). Non-zero disables sparse updates."""
    reg: float = 0.0
    """Loss-term L2 coefficient (>= 0). BPR: reg * (|u|^2+|i|^2+|j|^2)/(2B) on layer-0 rows;
    DirectSpec family: reg * mean(|z|^2 + |w|^2) on the transformed rows (LightGCN reference)."""

    # --- DirectSpec / DirectSpec+ ---------------------------------------------------------
    alpha: float = 1.0
    """Strength of the balancing step, >= 0 (0 = alignment only)."""
    tau: float = 3.0
    """DirectSpec+ softmax temperature multiplier (> 0) on cosine similarities."""
    adaptive_tau: bool = False
    """Use tau0 for pairs that share a training neighbour and tau1 otherwise."""
    tau0: float | None = None
    """Temperature for related pairs (> 0); default tau - 0.5."""
    tau1: float | None = None
    """Temperature for unrelated pairs (> 0); default tau."""
    shrink_norm: float = 0.03
    """Norm scaling s: z = s * |x~| * x~ (>= 0; 0 = off)."""

    # --- DirectAU ------------------------------------------------------------------------
    gamma: float = 1.0
    """Weight of the uniformity term (>= 0)."""
    uniformity_t: float = 2.0
    """Uniformity temperature t in exp(-t |x - y|^2) (> 0)."""

    # --- evaluation & control ------------------------------------------------------------
    eval_every: int = 10
    """Evaluate (metrics + spectrum) every this many epochs (and after the last), >= 1."""
    ks: tuple[int, ...] = (10, 20)
    """Cut-offs K for Recall@K / NDCG@K, each 1..1000."""
    recall_convention: RecallConvention = "lightgcn"
    """"lightgcn": hits@K/|T|; "reference": hits@K/min(K,|T|) (DirectSpec code, higher)."""
    early_stop_patience: int = 0
    """Stop after this many evaluations without improvement on a validation split (0 = off)."""
    early_stop_metric: str = "recall@20"
    """Validation metric to maximise for early stopping, e.g. "recall@20" or "ndcg@10"."""
    val_fraction: float = 0.1
    """Share of each user's training pairs held out for early stopping, in (0, 0.5]."""
    seed: int = 0
    """Seed for init and sampling (>= 0); CPU runs are bit-reproducible."""
    device: str | None = None
    """"cpu", "cuda", "cuda:N", "mps" or None/"auto" (SPECREC_DEVICE, else CUDA if present,
    else CPU)."""
    num_threads: int = 0
    """CPU threads for torch during fit (0 = auto: 1 on CPU, which is fastest for B = 256 and
    robust when the CPU is shared)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if isinstance(self.device, str) and self.device.strip().lower() in ("", "auto"):
            object.__setattr__(self, "device", None)
        self.validate()

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

    def validate(self) -> None:
        """Raise ConfigError naming the first field outside its range."""
        for name, lit in (
            ("encoder", Encoder),
            ("objective", Objective),
            ("optimizer", Optimizer),
            ("sampler", Sampler),
            ("init", Init),
            ("recall_convention", RecallConvention),
        ):
            value, allowed = getattr(self, name), get_args(lit)
            if value not in allowed:
                raise ConfigError(f"{name}: {value!r}, expected one of {list(allowed)}")
        for name, lo, hi in (
            ("dim", 1, 4096),
            ("n_layers", 1, 8),
            ("epochs", 1, 100_000),
            ("batch_size", 2, 1 << 20),
            ("eval_every", 1, 100_000),
            ("early_stop_patience", 0, 100_000),
            ("seed", 0, 2**63 - 1),
            ("num_threads", 0, 1024),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name}: {value!r}, expected an integer in [{lo}, {hi}]")
        for name, positive in (
            ("lr", True),
            ("tau", True),
            ("uniformity_t", True),
            ("init_std", True),
            ("weight_decay", False),
            ("reg", False),
            ("alpha", False),
            ("shrink_norm", False),
            ("gamma", False),
        ):
            _check_float(name, getattr(self, name), positive)
        for name in ("tau0", "tau1"):
            if getattr(self, name) is not None:
                _check_float(name, getattr(self, name), True)
        if self.adaptive_tau and self.tau_related <= 0:
            raise ConfigError(f"tau0: defaults to tau - 0.5 = {self.tau_related}, must be > 0")
        _check_float("lr_decay", self.lr_decay, True)
        if self.lr_decay > 1:
            raise ConfigError(f"lr_decay: {self.lr_decay!r}, expected a number in (0, 1]")
        _check_float("val_fraction", self.val_fraction, True)
        if self.val_fraction > 0.5:
            raise ConfigError(f"val_fraction: {self.val_fraction!r}, expected a number in (0, 0.5]")
        if not self.ks or any(not 1 <= k <= 1000 for k in self.ks):
            raise ConfigError(f"ks: {list(self.ks)}, expected one or more integers in [1, 1000]")
        metric, _, k = self.early_stop_metric.partition("@")
        if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(
                f"early_stop_metric: {self.early_stop_metric!r}, expected recall@K or ndcg@K "
                f"with K in ks {list(self.ks)}"
            )
        if self.device is not None and not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"device: {self.device!r}, expected cpu, cuda, cuda:N, mps or None (auto)"
            )
        if self.objective == "bpr" and self.sampler != "pair":
            raise ConfigError("sampler: 'user' is not supported for bpr, expected 'pair'")

    # ------------------------------------------------------------------------------------
    @classmethod
    def defaults(
        cls, objective: Objective = "directspec+", encoder: Encoder = "mf", **overrides: Any
    ) -> TrainConfig:
        """Per-objective defaults for `encoder`, then `overrides` (field=value) on top.

        DirectSpec family: the reference CiteULike set (d 64, B 256, SGD lr 180 decayed x0.9995
        per epoch for MF / x0.9999 for LightGCN, Xavier init, alpha 1.0, tau 3.0, shrink_norm
        0.03; LightGCN adds reg 0.01); "align" is the same with alpha 0, the linear
        "directspec" uses alpha 0.01 (alpha is not scale-free there). BPR: Adam lr 1e-3,
        L2 1e-4, B 2048, N(0, 0.1) init (LightGCN's). DirectAU: Adam lr 1e-3, gamma 1, t 2.
        """
        base: dict[str, Any] = {"objective": objective, "encoder": encoder}
        gcn = encoder == "lightgcn"
        if objective in DIRECTSPEC_FAMILY:
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
            }
        elif objective == "bpr":
            base |= {
                "optimizer": "adam",
                "sampler": "pair",
                "init": "normal",
                "init_std": 0.1,
                "batch_size": 2048,
                "lr": 1e-3,
                "lr_decay": 1.0,
                "reg": 1e-4,
                "epochs": 300,
            }
        elif objective == "directau":
            base |= {
                "optimizer": "adam",
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
        return cls(**(base | overrides))

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["ks"] = list(self.ks)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        if "ks" in data:
            data["ks"] = tuple(data["ks"])
        return cls(**data)


def _check_float(name: str, value: Any, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        want = "a finite number > 0" if positive else "a finite number >= 0"
        raise ConfigError(f"{name}: {value!r}, expected {want}")


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
}


def default_synthetic_config(
    objective: Objective = "directspec+", encoder: Encoder = "mf", **overrides: Any
) -> TrainConfig:
    """The config `make run` trains on the embedded synthetic default, for any objective.

    Defaults to MF-DirectSpec+ (d 64, B 256, plain SGD, Xavier init) re-tuned for a 10-epoch
    budget (see _SYNTHETIC). LightGCN does a full propagation per step (~14 s per epoch on
    this data on one CPU core), so its DirectSpec-family runs are cut to 4 epochs.
    """
    if objective not in _SYNTHETIC:
        raise ConfigError(f"objective: {objective!r}, expected one of {list(_SYNTHETIC)}")
    base: dict[str, Any] = {"eval_every": 5} | _SYNTHETIC[objective]
    if encoder == "lightgcn" and objective in DIRECTSPEC_FAMILY:
        base |= {"epochs": 4, "eval_every": 2}
    return TrainConfig.defaults(objective, encoder, **(base | overrides))
