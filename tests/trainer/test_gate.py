"""Quality gate: compares with the serving model on the same split; refuses collapse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.artifact import LoadedModel, ModelArrays, ModelRegistry
from contract.manifest import TrainedOn
from contract.settings import GateSettings
from contract.spectrum import embedding_spectrum
from trainer.data import Dataset
from trainer.gate import GateDecision
from trainer.gate import decide as gate_decide

# Two taste groups: users 0,1 like items 0-2, users 2,3 like items 3-5. Each user has two of
# their group's items in train and the third in test.
USERS = np.array([f"user_{u}" for u in range(4)])
ITEMS = np.array([f"item_{i}" for i in range(6)])
TRAIN = (np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.array([0, 1, 1, 2, 3, 4, 4, 5]))
TEST = (np.array([0, 1, 2, 3]), np.array([2, 0, 5, 3]))
CFG = GateSettings(gate_max_recall_drop=0.05, gate_min_erank_ratio=0.3)


def dataset() -> Dataset:
    return Dataset.from_pairs("toy", USERS, ITEMS, TRAIN, TEST)


def decide(
    ds: Dataset, users: np.ndarray, items: np.ndarray, *args: object, **kwargs: object
) -> GateDecision:
    """The gate with the new model's spectrum, as the worker passes fit's."""
    return gate_decide(ds, users, items, *args, spectrum=embedding_spectrum(users, items), **kwargs)


def perfect() -> tuple[np.ndarray, np.ndarray]:
    """Items one-hot in d=8; a user is the sum of its group's items: the test item ranks 1st."""
    items = np.eye(8, dtype=np.float32)[:6]
    users = np.zeros((4, 8), dtype=np.float32)
    users[:2, :3] = 1.0
    users[2:, 3:6] = 1.0
    return users, items


def inverted() -> tuple[np.ndarray, np.ndarray]:
    """Users point at the other group's items: Recall@1 = 0."""
    users, items = perfect()
    return users[[2, 3, 0, 1]], items


def serving(tmp_path: Path, users: np.ndarray, items: np.ndarray, n_users: int = 4) -> LoadedModel:
    arrays = ModelArrays.build(
        users[:n_users], items, USERS[:n_users], ITEMS, (TRAIN[0][:0], TRAIN[1][:0])
    )
    reg = ModelRegistry(tmp_path)
    reg.publish(arrays, config={})
    return reg.load()


def test_first_model_only_needs_a_healthy_spectrum() -> None:
    d = decide(dataset(), *perfect(), None, CFG, metric="recall@1")
    assert d.passed and d.reasons == []
    assert d.new_value == pytest.approx(1.0)
    assert d.serving_value is None and d.serving_version is None
    assert d.n_compared_users == 4
    assert d.erank_ratio > 0.3


def test_collapsed_model_is_rejected_with_its_erank() -> None:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    users = np.tile(direction, (4, 1)) + 1e-4 * rng.normal(size=(4, 8))
    items = np.tile(direction, (6, 1)) + 1e-4 * rng.normal(size=(6, 8))
    d = decide(dataset(), users, items, None, CFG, metric="recall@1")
    assert not d.passed
    assert d.erank_ratio < 0.2
    assert len(d.reasons) == 1
    assert f"normalised effective rank ratio {d.erank_ratio:.3f} is below" in d.reasons[0]


def test_worse_than_serving_is_rejected_better_passes(tmp_path: Path) -> None:
    good = serving(tmp_path / "a", *perfect())
    d = decide(dataset(), *inverted(), good, CFG, metric="recall@1")
    assert not d.passed
    assert d.serving_value == pytest.approx(1.0) and d.new_value == pytest.approx(0.0)
    assert "recall@1 0.0000 is below 0.9500" in d.reasons[0]
    bad = serving(tmp_path / "b", *inverted())
    d = decide(dataset(), *perfect(), bad, CFG, metric="recall@1")
    assert d.passed and d.serving_value == pytest.approx(0.0) and d.new_value == 1.0
    assert d.serving_version == bad.version


def test_users_unknown_to_serving_model_are_left_out_of_both(tmp_path: Path) -> None:
    # serving model knows users 0..2 only; new model is perfect for 0..2, wrong for user 3
    old = serving(tmp_path, *perfect(), n_users=3)
    users, items = perfect()
    users[3] = inverted()[0][3]
    d = decide(dataset(), users, items, old, CFG, metric="recall@1")
    assert d.n_compared_users == 3
    assert d.new_value == pytest.approx(1.0) and d.serving_value == pytest.approx(1.0)
    assert d.passed


def test_items_unknown_to_serving_model_are_never_its_hits(tmp_path: Path) -> None:
    # the serving model lacks item_2 (user_0's test item) but would score it highest
    users, items = perfect()
    arrays = ModelArrays.build(
        users, items[[0, 1, 3, 4, 5]], USERS, ITEMS[[0, 1, 3, 4, 5]], (TRAIN[0][:0], TRAIN[1][:0])
    )
    reg = ModelRegistry(tmp_path)
    reg.publish(arrays, config={})
    d = decide(dataset(), *perfect(), reg.load(), CFG, metric="recall@1")
    assert d.serving_value == pytest.approx(0.75)  # user_0 cannot get item_2 from it
    assert d.new_value == pytest.approx(1.0)


def refitted_serving(root: Path, recorded: float) -> LoadedModel:
    """A serving model refitted on every pair, train and test (perfect: it saw the test
    items), whose evaluation run recorded `recorded` as its recall@1."""
    users, items = perfect()
    every = (np.concatenate([TRAIN[0], TEST[0]]), np.concatenate([TRAIN[1], TEST[1]]))
    reg = ModelRegistry(root)
    reg.publish(
        ModelArrays.build(users, items, USERS, ITEMS, every),
        config={},
        metrics={"recall@1": recorded},
        extra={"trained_on": TrainedOn.counted("all", 12, 3, 8, 4).to_dict()},
    )
    return reg.load()


def test_a_refitted_serving_model_is_compared_by_its_recorded_split_metric(
    tmp_path: Path,
) -> None:
    # scored on this split it would get recall@1 = 1.0 (it trained on these test pairs); its
    # evaluation run's 0.5 stands for it
    old = refitted_serving(tmp_path / "a", recorded=0.5)
    users, items = perfect()
    users[[1, 3]] = inverted()[0][[1, 3]]  # the new model: right for users 0 and 2 only
    d = decide(dataset(), users, items, old, CFG, metric="recall@1")
    assert d.serving_value == pytest.approx(0.5) and d.serving_basis == "manifest"
    assert d.new_value == pytest.approx(0.5) and d.n_compared_users == 4
    assert d.passed
    better = refitted_serving(tmp_path / "b", recorded=0.8)
    d = decide(dataset(), users, items, better, CFG, metric="recall@1")
    assert not d.passed and "recall@1 0.5000 is below 0.7600" in d.reasons[0]
    # a serving model fitted on the train pairs only is scored on the split
    d = decide(dataset(), users, items, serving(tmp_path / "c", *perfect()), CFG, metric="recall@1")
    assert d.serving_value == pytest.approx(1.0) and d.serving_basis == "split"


def test_collapse_check_reads_the_spectrum_it_is_given() -> None:
    """The gate does not compute a spectrum of its own: the one fit computed is passed in."""
    users, items = perfect()
    spec = embedding_spectrum(users, items)
    spec["all"]["normalized"]["effective_rank_ratio"] = 0.01
    d = gate_decide(dataset(), users, items, None, CFG, metric="recall@1", spectrum=spec)
    assert not d.passed and d.erank_ratio == 0.01
    assert d.new_value == pytest.approx(1.0)  # the ranking is perfect: only the spectrum fails


def test_a_serving_spectral_model_is_scored_by_its_filter_on_the_new_split(tmp_path) -> None:
    """The gate scores a serving filter model (fitted on the split, as published without a
    refit) by its filter, exactly as the trainer evaluates the same filter: not by its
    low-pass embeddings, which alone score much lower."""
    from contract.artifact import ModelRegistry
    from contract.config import TrainConfig
    from contract.settings import GateSettings
    from trainer.data import load_dataset
    from trainer.gate import decide
    from trainer.refit import evaluate_then_refit, publish_fitted
    from trainer.synthetic import write_dataset
    from trainer.train import fit

    write_dataset(tmp_path / "d", n_users=300, n_items=200)
    ds = load_dataset(tmp_path / "d")
    cfg = TrainConfig.defaults("spectral", spectral_k=16)
    fitted = evaluate_then_refit(ds, cfg, fit, refit=False)
    registry = ModelRegistry(tmp_path / "models")
    publish_fitted(fitted, ds, cfg, registry)
    serving = registry.load()
    result = fitted.evaluation
    gate = decide(
        ds,
        result.user_emb,
        result.item_emb,
        serving,
        GateSettings(),
        spectrum=result.spectrum,
        new_filter=result.extra["filter"],
    )
    assert gate.serving_basis == "split" and gate.n_compared_users == result.metrics["n_users"]
    assert gate.serving_value == pytest.approx(result.metrics["recall@20"], abs=1e-9)
    assert gate.new_value == pytest.approx(result.metrics["recall@20"], abs=1e-9)
    low_pass_only = decide(
        ds, result.user_emb, result.item_emb, None, GateSettings(), spectrum=result.spectrum
    )
    assert low_pass_only.new_value < gate.new_value
