"""Choosing between DirectSpec+ and the spectral filter on a validation split."""

from __future__ import annotations

import numpy as np
import pytest

from contract.config import TrainConfig, default_synthetic_config
from trainer.data import Dataset, holdout_split
from trainer.select import select_by_validation
from trainer.train import fit


def _clustered(seed: int = 0, m: int = 240, n: int = 120, groups: int = 6) -> Dataset:
    """Users and items in planted groups: a user interacts mostly within its group."""
    rng = np.random.default_rng(seed)
    ug, ig = rng.integers(0, groups, m), np.arange(n) % groups
    pairs = set()
    for u in range(m):
        own = np.flatnonzero(ig == ug[u])
        for i in rng.choice(own, 8, replace=False):
            pairs.add((u, int(i)))
        pairs.add((u, int(rng.integers(0, n))))
    users, items = np.array(sorted(pairs)).T
    test = rng.random(len(users)) < 0.2
    return Dataset.from_pairs(
        "clustered",
        np.array([f"u{i}" for i in range(m)]),
        np.array([f"i{j}" for j in range(n)]),
        (users[~test], items[~test]),
        (users[test], items[test]),
    )


def test_the_clearly_better_candidate_wins_both_ways() -> None:
    ds = _clustered()
    spectral = TrainConfig.defaults("spectral", spectral_k=16)
    untrained = default_synthetic_config("directspec+", epochs=1, lr=1e-6)  # learns nothing
    good = default_synthetic_config("directspec+", epochs=60, batch_size=64)  # ~0.72
    # the low-pass part of rank 1 alone: about popularity (~0.21)
    popularity_like = TrainConfig.defaults("spectral", spectral_k=1, spectral_alpha=1e6)

    first = select_by_validation(ds, [untrained, spectral])
    assert first.winner.objective == "spectral"
    assert first.scores["spectral"] > first.scores["directspec+"] + 0.1
    second = select_by_validation(ds, [good, popularity_like])
    assert second.winner.objective == "directspec+"
    assert second.scores["directspec+"] > second.scores["spectral"]
    assert "directspec+ has the higher validation recall@20" in second.reason

    # the scores are the candidates' own validation metrics (never the test split)
    val = holdout_split(ds, 0.1, 0)
    assert first.scores["spectral"] == pytest.approx(fit(val, spectral).metrics["recall@20"])
    record = first.to_dict()
    assert record["winner"] == "spectral" and set(record["validation"]) == {
        "spectral",
        "directspec+",
    }


def test_candidates_need_distinct_objectives() -> None:
    cfg = TrainConfig.defaults("spectral")
    with pytest.raises(ValueError, match="distinct"):
        select_by_validation(_clustered(), [cfg, cfg])
