"""Quality gate: publish a retrained model only if it is not worse and not collapsed.

The new model is the job's evaluation run (trainer.refit: fitted on the training pairs only),
scored on the job's held-out split. A serving model fitted on its training pairs only
(manifest ``trained_on.pairs`` "train", or no ``trained_on``) is evaluated on the *same* split,
so both models are compared on the same users and test pairs: users unknown to the serving
model are left out of both evaluations, and items unknown to it can never be recommended by it
(they count as misses). A serving model refitted on every pair (``trained_on.pairs`` "all", the
default) has seen those test pairs, so scoring it on them would flatter it: its own evaluation
run's metric, recorded in its manifest (``metrics``, on the split it was published from),
stands for it instead (``serving_basis`` "manifest"), and the new model is scored on all
test users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from contract.artifact import LoadedModel
from contract.blend import blend
from contract.config import RecallConvention
from contract.settings import GateSettings
from contract.spectral import SpectralFilter
from trainer.blend import blend_score_rows
from trainer.data import Dataset
from trainer.evaluate import evaluate
from trainer.spectral import ScoreRows, evaluate_scores


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # empty when passed
    metric: str
    new_value: float
    serving_value: float | None  # None when nothing is serving
    serving_version: str | None
    n_compared_users: int
    erank_ratio: float
    thresholds: dict[str, float]
    serving_basis: Literal["split", "manifest"] | None = None
    """How serving_value was obtained: the serving model scored on this split, or its
    manifest's recorded evaluation metric (it was refitted on every pair); None: no value."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aligned(
    ds: Dataset, model: LoadedModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Serving embeddings on ds's rows: (U (m,d), I (n,d), known_user (m,), known_item (n,))."""
    arr = model.arrays
    urow = {u: i for i, u in enumerate(arr.user_ids.tolist())}
    irow = {it: i for i, it in enumerate(arr.item_ids.tolist())}
    u_idx = np.array([urow.get(u, -1) for u in ds.user_ids.tolist()])
    i_idx = np.array([irow.get(it, -1) for it in ds.item_ids.tolist()])
    users = np.zeros((ds.n_users, arr.dim), dtype=np.float32)
    items = np.zeros((ds.n_items, arr.dim), dtype=np.float32)
    users[u_idx >= 0] = arr.user_emb[u_idx[u_idx >= 0]]
    items[i_idx >= 0] = arr.item_emb[i_idx[i_idx >= 0]]
    return users, items, u_idx >= 0, i_idx >= 0


def _serving_filter_scores(
    ds: Dataset,
    model: LoadedModel,
    train: sp.csr_matrix,
    aligned_users: np.ndarray,
) -> ScoreRows:
    """A serving spectral-filter model's (or blend's) scores on ds's rows: each ds user's
    training row, mapped to the serving model's items, is scored by its filter (exact for any
    history); a blend adds its weight times the standardised scores of `aligned_users` (m, d),
    the serving model's vectors of ds's users (zero for a user it does not know); items it
    does not know score -1e9, below every known item."""
    arr = model.arrays
    irow = {it: i for i, it in enumerate(arr.item_ids.tolist())}
    i_idx = np.array([irow.get(it, -1) for it in ds.item_ids.tolist()])
    known = np.flatnonzero(i_idx >= 0)
    to_old = sp.csr_matrix(
        (np.ones(len(known), np.float32), (known, i_idx[known])), shape=(ds.n_items, arr.n_items)
    )
    filt = SpectralFilter.of_arrays(arr, model.manifest.model.spectral_alpha)
    histories = sp.csr_matrix(train @ to_old)

    weight = model.manifest.model.blend_weight if arr.kind == "blend" else None

    def score_rows(rows: np.ndarray) -> np.ndarray:
        old = filt.scores(histories[rows])  # (B, n_old)
        if weight is not None:
            old = blend(old, aligned_users[rows] @ arr.item_emb.T, weight)
        out = np.full((len(rows), ds.n_items), -1e9, dtype=np.float32)
        out[:, known] = old[:, i_idx[known]]
        return out

    return score_rows


def _metric(
    scores: ScoreRows | tuple[np.ndarray, np.ndarray],
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    metric: str,
    recall_convention: RecallConvention,
) -> float:
    """`metric` ("recall@K") of a model on (train masked, test): a score function (a spectral
    filter) or embeddings (U (m, d), I (n, d): inner products)."""
    k = int(metric.split("@")[1])
    if callable(scores):
        out = evaluate_scores(scores, train, test, ks=(k,), recall_convention=recall_convention)
    else:
        users, items = (np.ascontiguousarray(a, dtype=np.float32) for a in scores)
        out = evaluate(
            torch.from_numpy(users),
            torch.from_numpy(items),
            train,
            test,
            ks=(k,),
            recall_convention=recall_convention,
        )
    return float(out[metric])


def _rows_only(matrix: sp.csr_matrix, keep_rows: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(sp.diags(keep_rows.astype(np.float32)) @ matrix)


def decide(
    ds: Dataset,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    serving: LoadedModel | None,
    cfg: GateSettings,
    recall_convention: RecallConvention = "lightgcn",
    metric: str = "recall@20",
    *,
    spectrum: dict[str, Any],
    new_filter: SpectralFilter | None = None,
    new_blend_weight: float | None = None,
) -> GateDecision:
    """Compare the new model (user_emb (m,d), item_emb (n,d) on ds's rows) with `serving`.

    A spectral-filter model (the new one: ``new_filter`` fitted on ds's training pairs; the
    serving one: its artifact's filter) is scored by its filter, not by its low-pass
    embeddings, the way the service answers; a blend (``new_blend_weight``, or the serving
    manifest's) by its filter and embeddings blended (contract/blend.py).

    ``spectrum``: ``contract.spectrum.embedding_spectrum(user_emb, item_emb)``, as fit
    computed it (``TrainResult.spectrum``); the collapse check reads its
    ["all"]["normalized"]["effective_rank_ratio"].
    """
    train, test = ds.train_matrix(), ds.test_matrix()
    erank_ratio = float(spectrum["all"]["normalized"]["effective_rank_ratio"])
    reasons: list[str] = []
    serving_value: float | None = None
    n_users = int((np.diff(test.indptr) > 0).sum())
    new_test = test
    basis: Literal["split", "manifest"] | None = None
    if serving is not None and _refitted(serving):
        recorded = serving.manifest.metrics.get(metric)
        if isinstance(recorded, int | float) and not isinstance(recorded, bool):
            serving_value, basis = float(recorded), "manifest"
    elif serving is not None:
        old_u, old_i, known_u, known_i = _aligned(ds, serving)
        new_test = _rows_only(test, known_u)
        n_users = int((np.diff(new_test.indptr) > 0).sum())
        # items the serving model has never seen cannot be recommended by it: one extra
        # dimension scores them -1e9 below every known item (exact unless a user has fewer
        # than k unseen known items)
        old_u = np.hstack([old_u, np.ones((ds.n_users, 1), dtype=np.float32)])
        old_i = np.hstack([old_i, np.where(known_i, 0.0, -1e9).astype(np.float32)[:, None]])
        if n_users:
            serving_scores: ScoreRows | tuple[np.ndarray, np.ndarray] = (old_u, old_i)
            if serving.arrays.kind in ("spectral", "blend"):
                serving_scores = _serving_filter_scores(ds, serving, train, old_u[:, :-1])
            serving_value = _metric(serving_scores, train, new_test, metric, recall_convention)
            basis = "split"
    new_value = 0.0
    if n_users:
        new_scores: ScoreRows | tuple[np.ndarray, np.ndarray] = (user_emb, item_emb)
        if new_filter is not None and new_blend_weight is not None:
            new_scores = blend_score_rows(new_filter, train, user_emb, item_emb, new_blend_weight)
        elif new_filter is not None:
            filt = new_filter
            new_scores = lambda rows: filt.scores(train[rows])  # noqa: E731
        new_value = _metric(new_scores, train, new_test, metric, recall_convention)
    if serving_value is not None:
        floor = serving_value * (1.0 - cfg.gate_max_recall_drop)
        if new_value < floor:
            reasons.append(
                f"{metric} {new_value:.4f} is below {floor:.4f} (serving "
                f"{serving_value:.4f} minus the allowed {cfg.gate_max_recall_drop:.0%} drop)"
            )
    if erank_ratio < cfg.gate_min_erank_ratio:
        reasons.append(
            f"normalised effective rank ratio {erank_ratio:.3f} is below the collapse "
            f"threshold {cfg.gate_min_erank_ratio:.3f}"
        )
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        metric=metric,
        new_value=float(new_value),
        serving_value=None if serving_value is None else float(serving_value),
        serving_version=serving.version if serving is not None else None,
        n_compared_users=n_users,
        erank_ratio=erank_ratio,
        thresholds={
            "max_relative_drop": cfg.gate_max_recall_drop,
            "min_erank_ratio": cfg.gate_min_erank_ratio,
        },
        serving_basis=basis,
    )


def _refitted(model: LoadedModel) -> bool:
    """Whether `model` was fitted on its test pairs too (manifest ``trained_on.pairs``)."""
    trained = model.manifest.trained_on
    return trained is not None and trained.pairs == "all"
