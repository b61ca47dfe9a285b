"""The blend of DirectSpec+ and the spectral filter (contract/blend.py): its scores over a
dataset's users, its metrics for several weights in one pass, and the weight chosen on a
validation split carved from the training pairs.

Fitting both parts is trainer.train's job (``fit`` with objective "blend"); this module only
scores, so it imports nothing from trainer.train.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from contract.artifact import ModelArrays
from contract.blend import blend, zscore
from contract.config import TrainConfig
from contract.spectral import SpectralFilter
from trainer.data import Dataset, holdout_split
from trainer.evaluate import _binary_csr, _check_args, _ranking_metrics
from trainer.spectral import (
    TOP_LIST_LENGTH,
    ScoreRows,
    filter_scorer,
    fit_filter,
    histories_of,
    ranked_lists,
    seen_matrix,
    stable_topk,
    with_filter,
)

WEIGHTS = (0.0, 0.2, 0.4, 0.8, 1.2, 1.6, 2.4, 3.2)
"""The grid β is chosen from (0: the filter alone). On Gowalla validation Recall@20 rises
from 0.2129 at 0 to 0.2192 at 1.6 and falls after (docs/results/blend.json)."""
VALIDATION_FRACTION = 0.1
"""Share of each user's training pairs held out to choose β."""


def embedding_config(cfg: TrainConfig) -> TrainConfig:
    """The config of a blend's embedding part: ``cfg`` as DirectSpec+ (its own training
    fields: encoder, lr, epochs ...)."""
    return cfg.with_overrides(objective="directspec+", blend_weight=None)


def blend_score_rows(
    filt: SpectralFilter,
    histories: sp.csr_matrix,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    weight: float,
) -> ScoreRows:
    """User rows (B,) -> their blend scores (B, n): the filter scores their `histories` row
    (m, n), the embeddings score user_emb (m, d) @ item_emb (n, d).T."""
    histories = _binary_csr(histories)

    def score_rows(rows: np.ndarray) -> np.ndarray:
        return blend(filt.scores(histories[rows]), user_emb[rows] @ item_emb.T, weight)

    return score_rows


def blend_metrics(
    filt: SpectralFilter,
    histories: sp.csr_matrix,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    test: sp.csr_matrix,
    weights: Sequence[float],
    *,
    ks: Sequence[int] = (10, 20),
    recall_convention: Any = "lightgcn",
    batch_users: int = 1024,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[float, dict[str, float]]:
    """Full-ranking Recall@K / NDCG@K of z(filter) + β·z(embeddings) for every β in
    `weights`, each user's `histories` row (m, n) masked, against `test` (m, n): {β: metrics}.
    One pass over the test users: both parts are scored once per batch (the filter's block
    split over `threads`)."""
    ks_list = _check_args(ks, recall_convention, batch_users, histories.shape, histories, test)
    histories, test = _binary_csr(histories), _binary_csr(test)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    cpu = torch.device("cpu")
    sums: dict[float, dict[str, float]] = {float(w): {} for w in weights}
    with filter_scorer(filt, threads) as filter_scores:
        for start in range(0, len(users), batch_users):
            rows = users[start : start + batch_users]
            h = histories[rows]
            zf = zscore(filter_scores(h))  # (B, n)
            zd = zscore(user_emb[rows] @ item_emb.T)  # (B, n)
            seen = h.nonzero()
            for w in sums:
                scores = zf + np.float32(w) * zd
                scores[seen] = -np.inf

                def rank_batch(
                    local: np.ndarray, depth: int, scores: np.ndarray = scores
                ) -> tuple[torch.Tensor, torch.Tensor]:
                    top, top_scores = stable_topk(scores[local], depth)
                    return torch.from_numpy(top), torch.from_numpy(top_scores > -np.inf)

                m = _ranking_metrics(
                    rank_batch, test[rows], ks_list, recall_convention, len(rows), cpu
                )
                for key, value in m.items():
                    if key != "n_users":
                        sums[w][key] = sums[w].get(key, 0.0) + value * m["n_users"]
            if progress is not None:
                progress(start + len(rows), len(users))
    return {
        w: {key: value / max(len(users), 1) for key, value in s.items()} | {"n_users": len(users)}
        for w, s in sums.items()
    }


def best_weight(found: dict[float, dict[str, float]], metric: str) -> float:
    """The weight of `found` (blend_metrics' result) with the highest `metric`, the first in
    the grid's order on a tie."""
    return max(found, key=lambda w: found[w][metric])


@dataclass(frozen=True)
class WeightChoice:
    """β chosen on validation, with every candidate's validation score."""

    weight: float
    scores: dict[float, float]  # β -> validation metric
    metric: str
    fraction: float
    seed: int
    embedding_metric: float  # the embedding part alone on the same split

    def to_dict(self) -> dict[str, Any]:
        """What the manifest and the job record keep (``model.blend_selection``)."""
        return {
            "weight": self.weight,
            "metric": self.metric,
            "validation": {f"{w:g}": s for w, s in self.scores.items()},
            "directspec+_alone": self.embedding_metric,
            "split": {"fraction": self.fraction, "seed": self.seed, "of": "training pairs"},
        }


EmbeddingFit = Callable[[Dataset, TrainConfig], Any]
"""``(dataset, DirectSpec+ config) -> TrainResult`` (trainer.train.fit, bound by the caller)."""


def choose_weight(
    ds: Dataset,
    cfg: TrainConfig,
    fit_embedding: EmbeddingFit,
    *,
    weights: Sequence[float] = WEIGHTS,
    fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    metric: str = "recall@20",
) -> WeightChoice:
    """Fit both parts on ``holdout_split(ds, fraction, seed)`` and keep the β of `weights`
    with the highest validation `metric` (the first on a tie). The test split is not read."""
    val = holdout_split(ds, fraction, seed)
    emb = fit_embedding(val, embedding_config(cfg))
    train = val.train_matrix()
    filt = fit_filter(train, cfg.spectral_k, cfg.spectral_alpha, cfg.seed, cfg.spectral_solver)
    k = int(metric.split("@")[1])
    ks = sorted({*cfg.ks, k})
    found = blend_metrics(
        filt,
        train,
        emb.user_emb,
        emb.item_emb,
        val.test_matrix(),
        weights,
        ks=ks,
        recall_convention=cfg.recall_convention,
    )
    scores = {w: m[metric] for w, m in found.items()}
    best = best_weight(found, metric)
    return WeightChoice(best, scores, metric, fraction, seed, float(emb.metrics.get(metric, 0.0)))


def blend_arrays(arrays: ModelArrays, filt: SpectralFilter, weight: float) -> ModelArrays:
    """`arrays` (ids, seen items, DirectSpec+'s embeddings) with the filter, its low-pass
    factors and each user's top list by the blend's scores (their row of the matrix the
    filter was fitted on, their seen items left out)."""
    score_rows = blend_score_rows(
        filt, histories_of(filt), arrays.user_emb, arrays.item_emb, weight
    )
    lists = ranked_lists(score_rows, seen_matrix(arrays), TOP_LIST_LENGTH)
    return with_filter(arrays, filt, lists, lowpass_apart=True)
