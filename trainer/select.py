"""Pick what to serve by validation: each candidate config (e.g. DirectSpec+ and the spectral
filter) is fitted on a split carved from the training pairs and the better one on
``metric`` wins. The caller then fits the winner on the full training pairs (the test split
is never read here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contract.config import TrainConfig
from trainer.data import Dataset, holdout_split
from trainer.train import ProgressFn, fit

VALIDATION_FRACTION = 0.1
"""Share of each user's training pairs held out to choose between the candidates."""


@dataclass(frozen=True)
class Selection:
    """The winner, every candidate's validation score, and why the winner won."""

    winner: TrainConfig
    scores: dict[str, float]  # candidate objective -> validation metric
    metric: str
    reason: str
    fraction: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """What the job record and the manifest keep (``selection``)."""
        return {
            "winner": self.winner.objective,
            "metric": self.metric,
            "validation": dict(self.scores),
            "reason": self.reason,
            "split": {"fraction": self.fraction, "seed": self.seed, "of": "training pairs"},
        }


def select_by_validation(
    ds: Dataset,
    candidates: Sequence[TrainConfig],
    *,
    fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    metric: str = "recall@20",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Selection:
    """Fit every candidate (distinct objectives) on ``holdout_split(ds, fraction, seed)`` and
    keep the one with the highest validation `metric` (the first on a tie)."""
    objectives = [c.objective for c in candidates]
    if not candidates or len(set(objectives)) != len(objectives):
        raise ValueError(f"candidates need distinct objectives, got {objectives}")
    val = holdout_split(ds, fraction, seed)
    scores: dict[str, float] = {}
    for cfg in candidates:

        def report(info: dict[str, Any], objective: str = cfg.objective) -> None:
            if progress is not None:
                progress({**info, "selecting": objective})

        result = fit(val, cfg, progress=report, should_stop=should_stop)
        scores[cfg.objective] = float(result.metrics.get(metric, 0.0))
    winner = max(candidates, key=lambda c: scores[c.objective])
    others = ", ".join(f"{o} {s:.4f}" for o, s in scores.items() if o != winner.objective)
    reason = (
        f"{winner.objective} has the higher validation {metric}: "
        f"{scores[winner.objective]:.4f} against {others} "
        f"({fraction:.0%} of each user's training pairs held out, seed {seed})"
    )
    return Selection(winner, scores, metric, reason, fraction, seed)
