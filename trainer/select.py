"""Pick what to serve by validation: each candidate config (e.g. DirectSpec+ and the spectral
filter) is fitted on a split carved from the training pairs and the better one on
``metric`` wins. With both a DirectSpec+ and a spectral candidate, their blend
(contract/blend.py) is a candidate too: scored from the same two validation fits for each
weight of trainer.blend.WEIGHTS (above 0), at no extra training. The caller then fits the
winner on the full training pairs (the test split is never read here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contract.config import TrainConfig
from trainer.blend import WEIGHTS, best_weight, blend_metrics
from trainer.data import Dataset, holdout_split
from trainer.train import ProgressFn, fit

VALIDATION_FRACTION = 0.1
"""Share of each user's training pairs held out to choose between the candidates."""


@dataclass(frozen=True)
class Selection:
    """The winner, every candidate's validation score, and why the winner won."""

    winner: TrainConfig
    scores: dict[str, float]  # candidate objective (and "blend") -> validation metric
    metric: str
    reason: str
    fraction: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """What the job record and the manifest keep (``selection``)."""
        out: dict[str, Any] = {
            "winner": self.winner.objective,
            "metric": self.metric,
            "validation": dict(self.scores),
            "reason": self.reason,
            "split": {"fraction": self.fraction, "seed": self.seed, "of": "training pairs"},
        }
        if self.winner.objective == "blend":
            out["blend_weight"] = self.winner.blend_weight
        return out


def select_by_validation(
    ds: Dataset,
    candidates: Sequence[TrainConfig],
    *,
    fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    metric: str = "recall@20",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    blend: bool = True,
) -> Selection:
    """Fit every candidate (distinct objectives) on ``holdout_split(ds, fraction, seed)`` and
    keep the one with the highest validation `metric` (the first on a tie); with `blend`, a
    DirectSpec+ and a spectral candidate add their best blend (see the module docstring)."""
    objectives = [c.objective for c in candidates]
    if not candidates or len(set(objectives)) != len(objectives):
        raise ValueError(f"candidates need distinct objectives, got {objectives}")
    val = holdout_split(ds, fraction, seed)
    scores: dict[str, float] = {}
    fitted: dict[str, Any] = {}
    for cfg in candidates:

        def report(info: dict[str, Any], objective: str = cfg.objective) -> None:
            if progress is not None:
                progress({**info, "selecting": objective})

        result = fit(val, cfg, progress=report, should_stop=should_stop)
        scores[cfg.objective] = float(result.metrics.get(metric, 0.0))
        fitted[cfg.objective] = result
    pool = list(candidates)
    by_objective = {c.objective: c for c in candidates}
    if blend and {"directspec+", "spectral"} <= set(by_objective):
        emb, spec = fitted["directspec+"], fitted["spectral"]
        k = int(metric.split("@")[1])
        found = blend_metrics(
            spec.extra["filter"],
            val.train_matrix(),
            emb.user_emb,
            emb.item_emb,
            val.test_matrix(),
            [w for w in WEIGHTS if w > 0],
            ks=(k,),
            recall_convention=by_objective["directspec+"].recall_convention,
        )
        weight = best_weight(found, metric)
        spectral = by_objective["spectral"]
        pool.append(
            by_objective["directspec+"].with_overrides(
                objective="blend",
                blend_weight=weight,
                spectral_k=spectral.spectral_k,
                spectral_alpha=spectral.spectral_alpha,
                spectral_solver=spectral.spectral_solver,
            )
        )
        scores["blend"] = float(found[weight][metric])
    winner = max(pool, key=lambda c: scores[c.objective])
    others = ", ".join(f"{o} {s:.4f}" for o, s in scores.items() if o != winner.objective)
    name: str = winner.objective
    if winner.objective == "blend":
        name = f"the blend of directspec+ and spectral (weight {winner.blend_weight:g})"
    reason = (
        f"{name} has the highest validation {metric}: "
        f"{scores[winner.objective]:.4f} against {others} "
        f"({fraction:.0%} of each user's training pairs held out, seed {seed})"
    )
    return Selection(winner, scores, metric, reason, fraction, seed)
