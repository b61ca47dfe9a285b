"""What a published model is trained on: evaluate on the split, then refit on every pair.

A dataset's held-out test pairs exist to measure a configuration; a user who interacted with
an item must neither be offered it again nor be modelled without it. So publishing trains
twice (``evaluate_then_refit``): an evaluation run on the training pairs, scored on the test
pairs (its metrics and history are what the manifest and the quality gate keep), then the same
configuration fitted on train ∪ test (``all_pairs``) for the epochs the evaluation ran (its
best epoch under early stopping, which the refit then does not use: it has no validation
split to stop on). The refit's embeddings are published (``publish_fitted``); the artifact's
seen set is train ∪ test either way (trainer.train.publish_result).

``refit=False`` (``specrec-train --no-publish``, or asked for) publishes the evaluation run
itself. A dataset without test pairs has nothing to refit on: its one run is fitted on all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from contract.artifact import ModelRegistry
from contract.config import TrainConfig
from contract.manifest import TrainedOn
from trainer.data import Dataset
from trainer.train import TrainResult, publish_result

TrainFn = Callable[[Dataset, TrainConfig], TrainResult]
"""``(dataset, config) -> TrainResult``: one training run, e.g. ``trainer.train.fit`` with the
caller's progress, cancellation and ranks bound."""


@dataclass(frozen=True)
class Fitted:
    """The outcome of ``evaluate_then_refit``."""

    model: TrainResult
    """The run to publish: the refit on every pair, or ``evaluation`` itself."""
    evaluation: TrainResult
    """The run on the split: test metrics, history, and the embeddings the gate compares."""
    trained_on: TrainedOn
    """Which pairs ``model`` was fitted on (the manifest's ``trained_on``)."""

    @property
    def refitted(self) -> bool:
        return self.model is not self.evaluation


def all_pairs(ds: Dataset) -> Dataset:
    """``ds`` with every pair (train ∪ test, deduplicated) as training pairs and no test pairs;
    same id maps, name ``<name>:all``."""
    return Dataset.from_pairs(
        f"{ds.name}:all",
        ds.user_ids,
        ds.item_ids,
        (
            np.concatenate([ds.train_users, ds.test_users]),
            np.concatenate([ds.train_items, ds.test_items]),
        ),
    )


def refit_config(cfg: TrainConfig, evaluation: TrainResult) -> TrainConfig:
    """``cfg`` for the refit: the evaluation's epochs (its best epoch when it stopped early or
    kept an earlier epoch's embeddings), no early stopping, one evaluation (the spectrum of
    the published embeddings) at the end; a blend keeps the evaluation's weight."""
    epochs = evaluation.best_epoch or evaluation.epochs_run
    fixed: dict[str, Any] = {}
    if cfg.objective == "blend":  # the weight the evaluation chose (or was given)
        fixed["blend_weight"] = evaluation.extra["blend_weight"]
    return cfg.with_overrides(epochs=epochs, eval_every=epochs, early_stop_patience=0, **fixed)


def evaluate_then_refit(
    ds: Dataset, cfg: TrainConfig, train: TrainFn, *, refit: bool = True
) -> Fitted:
    """Train ``cfg`` on ``ds``'s training pairs (the evaluation run), then, with ``refit``
    and test pairs to add, on all of ``ds``'s pairs with ``refit_config``; see the module
    docstring. Raises what ``train`` raises (TrainingCancelled, TrainingDiverged ...)."""
    evaluation = train(ds, cfg)
    if not refit or ds.n_test == 0:
        pairs: Literal["all", "train"] = "all" if ds.n_test == 0 else "train"
        trained_on = TrainedOn.counted(
            pairs, ds.n_train, evaluation.epochs_run, ds.n_train, ds.n_test
        )
        return Fitted(evaluation, evaluation, trained_on)
    every = all_pairs(ds)
    refit_cfg = refit_config(cfg, evaluation)
    model = train(every, refit_cfg)
    trained_on = TrainedOn.counted("all", every.n_train, refit_cfg.epochs, ds.n_train, ds.n_test)
    return Fitted(model, evaluation, trained_on)


def publish_fitted(
    fitted: Fitted, ds: Dataset, cfg: TrainConfig, registry: ModelRegistry, **options: Any
) -> str:
    """Publish ``fitted.model`` with the evaluation's metrics and ``trained_on`` (options:
    publish_result's keep, activate, extra, index_recall); ``ds`` is the dataset with its split."""
    return publish_result(
        fitted.model,
        ds,
        cfg,
        registry,
        evaluation=fitted.evaluation,
        trained_on=fitted.trained_on,
        **options,
    )
