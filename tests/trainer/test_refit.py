"""The published model: an evaluation run on the split, then a refit on every pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.artifact import ModelRegistry
from contract.config import TrainConfig
from contract.manifest import TrainedOn
from trainer.data import Dataset, load_dataset
from trainer.refit import all_pairs, evaluate_then_refit, publish_fitted, refit_config
from trainer.synthetic import write_dataset
from trainer.train import TrainResult, fit


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("small")
    write_dataset(out, n_users=120, n_items=80, seed=1)
    return load_dataset(out)


def quick(**kw: object) -> TrainConfig:
    base = {"dim": 16, "epochs": 3, "eval_every": 1, "batch_size": 64, "seed": 0}
    return TrainConfig.defaults("directspec+", "mf", **(base | kw))


def pair_set(users: np.ndarray, items: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(users.tolist(), items.tolist(), strict=True))


def quiet_fit(d: Dataset, c: TrainConfig) -> TrainResult:
    return fit(d, c, progress_bar=False)


def test_all_pairs_trains_on_train_and_test(ds: Dataset) -> None:
    every = all_pairs(ds)
    assert ds.n_test > 0
    assert pair_set(every.train_users, every.train_items) == pair_set(
        ds.train_users, ds.train_items
    ) | pair_set(ds.test_users, ds.test_items)
    assert every.n_test == 0
    np.testing.assert_array_equal(every.user_ids, ds.user_ids)
    np.testing.assert_array_equal(every.item_ids, ds.item_ids)


def test_the_refit_is_published_with_the_split_runs_metrics(ds: Dataset, tmp_path: Path) -> None:
    cfg = quick()
    calls: list[tuple[str, int, int]] = []

    def train(d: Dataset, c: TrainConfig) -> TrainResult:
        calls.append((d.name, d.n_train, d.n_test))
        return quiet_fit(d, c)

    fitted = evaluate_then_refit(ds, cfg, train)
    # first the split (train pairs only), then every pair
    assert calls == [
        (ds.name, ds.n_train, ds.n_test),
        (f"{ds.name}:all", all_pairs(ds).n_train, 0),
    ]
    assert fitted.refitted
    # the evaluation run is exactly fit on the split: its metrics mask train only
    alone = quiet_fit(ds, cfg)
    assert fitted.evaluation.metrics == alone.metrics
    assert fitted.evaluation.metrics["n_users"] > 0
    np.testing.assert_array_equal(fitted.evaluation.user_emb, alone.user_emb)
    refit = quiet_fit(all_pairs(ds), refit_config(cfg, alone))
    np.testing.assert_array_equal(fitted.model.user_emb, refit.user_emb)
    np.testing.assert_array_equal(fitted.model.item_emb, refit.item_emb)
    assert not np.array_equal(fitted.model.user_emb, alone.user_emb)
    assert fitted.trained_on == TrainedOn.counted(
        "all", ds.n_train + ds.n_test, 3, ds.n_train, ds.n_test
    )

    reg = ModelRegistry(tmp_path / "models")
    publish_fitted(fitted, ds, cfg, reg)
    loaded = reg.load()
    a = loaded.arrays
    # the published embeddings are the refit's; seen is train ∪ test
    np.testing.assert_array_equal(a.user_emb, fitted.model.user_emb)
    seen_users = np.repeat(np.arange(a.n_users), np.diff(a.seen_indptr))
    assert pair_set(seen_users, a.seen_indices) == pair_set(
        ds.train_users, ds.train_items
    ) | pair_set(ds.test_users, ds.test_items)
    assert len(a.seen_indices) == ds.n_train + ds.n_test  # the synthetic split is disjoint
    np.testing.assert_array_equal(
        a.item_popularity,
        np.bincount(np.concatenate([ds.train_items, ds.test_items]), minlength=ds.n_items),
    )
    # the manifest keeps the split run's metrics and history, and says what the model saw
    m = loaded.manifest.to_dict()
    assert m["metrics"] == alone.metrics
    assert m["metrics"] != fitted.model.metrics  # the refit has no test pairs to score
    assert [(h["epoch"], h["metrics"]) for h in m["training"]["history"]] == [
        (h["epoch"], h["metrics"]) for h in alone.history
    ]
    assert m["training"]["refit"]["epochs_run"] == 3
    assert m["trained_on"] == {
        "pairs": "all",
        "n_pairs": ds.n_train + ds.n_test,
        "epochs": 3,
        "evaluated_on": {"train_pairs": ds.n_train, "test_pairs": ds.n_test},
    }
    assert loaded.manifest.trained_on == fitted.trained_on
    assert m["spectrum"] == fitted.model.spectrum  # of the published embeddings


def test_without_refit_the_evaluation_run_is_published(ds: Dataset, tmp_path: Path) -> None:
    cfg = quick(epochs=2)
    fitted = evaluate_then_refit(ds, cfg, quiet_fit, refit=False)
    assert fitted.model is fitted.evaluation and not fitted.refitted
    assert fitted.trained_on == TrainedOn.counted("train", ds.n_train, 2, ds.n_train, ds.n_test)
    reg = ModelRegistry(tmp_path / "models")
    publish_fitted(fitted, ds, cfg, reg)
    loaded = reg.load()
    np.testing.assert_array_equal(loaded.arrays.user_emb, fitted.evaluation.user_emb)
    assert loaded.manifest.to_dict()["trained_on"]["pairs"] == "train"
    assert "refit" not in loaded.manifest.to_dict()["training"]
    # the artifact's seen set is every known pair all the same
    assert len(loaded.arrays.seen_indices) == ds.n_train + ds.n_test


def test_the_refit_runs_the_best_epochs_without_early_stopping(ds: Dataset) -> None:
    cfg = quick(epochs=8, early_stop_patience=2, val_fraction=0.2)
    seen: list[TrainConfig] = []

    def train(d: Dataset, c: TrainConfig) -> TrainResult:
        seen.append(c)
        return quiet_fit(d, c)

    fitted = evaluate_then_refit(ds, cfg, train)
    best = fitted.evaluation.best_epoch
    assert best is not None and 1 <= best <= fitted.evaluation.epochs_run
    assert seen[1] == cfg.with_overrides(epochs=best, eval_every=best, early_stop_patience=0)
    assert fitted.model.epochs_run == best and fitted.trained_on.epochs == best


def test_a_dataset_without_test_pairs_is_trained_once_on_all(ds: Dataset) -> None:
    every = all_pairs(ds)
    calls: list[str] = []

    def train(d: Dataset, c: TrainConfig) -> TrainResult:
        calls.append(d.name)
        return quiet_fit(d, c)

    fitted = evaluate_then_refit(every, quick(epochs=1), train)
    assert calls == [every.name] and fitted.model is fitted.evaluation
    assert fitted.trained_on == TrainedOn.counted("all", every.n_train, 1, every.n_train, 0)
