"""Choosing between DirectSpec+ and the spectral filter on a validation split."""

from __future__ import annotations

import numpy as np
import pytest

from contract.config import TrainConfig, default_synthetic_config
from trainer.blend import WEIGHTS, blend_metrics
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

    first = select_by_validation(ds, [untrained, spectral], blend=False)
    assert first.winner.objective == "spectral"
    assert first.scores["spectral"] > first.scores["directspec+"] + 0.1
    second = select_by_validation(ds, [good, popularity_like], blend=False)
    assert second.winner.objective == "directspec+"
    assert second.scores["directspec+"] > second.scores["spectral"]
    assert "directspec+ has the highest validation recall@20" in second.reason

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


def test_the_blend_of_both_candidates_competes_with_its_best_weight() -> None:
    ds = _clustered()
    emb = default_synthetic_config("directspec+", epochs=20, batch_size=64)
    spectral = TrainConfig.defaults("spectral", spectral_k=16)
    chosen = select_by_validation(ds, [emb, spectral])
    assert set(chosen.scores) == {"directspec+", "spectral", "blend"}
    # the blend's score: the best weight over the grid, from the same two validation fits
    val = holdout_split(ds, 0.1, 0)
    e, f = fit(val, emb), fit(val, spectral)
    weights = [w for w in WEIGHTS if w > 0]
    found = blend_metrics(
        f.extra["filter"], val.train_matrix(), e.user_emb, e.item_emb, val.test_matrix(), weights
    )
    best = max(found, key=lambda w: found[w]["recall@20"])
    assert chosen.scores["blend"] == pytest.approx(found[best]["recall@20"])
    assert chosen.scores[chosen.winner.objective] == max(chosen.scores.values())
    if chosen.winner.objective == "blend":  # the winner config carries both parts' settings
        assert chosen.winner.blend_weight == best and chosen.winner.spectral_k == 16
        assert chosen.winner.lr == emb.lr and chosen.to_dict()["blend_weight"] == best
    without = select_by_validation(ds, [emb, spectral], blend=False)
    assert "blend" not in without.scores and without.winner.objective != "blend"
