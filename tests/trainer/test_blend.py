"""The blend objective: DirectSpec+ and the spectral filter, the weight chosen on validation,
its metrics, its refit, its published lists and the quality gate (trainer/blend.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from contract.artifact import ModelRegistry
from contract.config import ConfigError, TrainConfig
from contract.settings import GateSettings
from contract.spectral import SpectralFilter
from trainer.blend import blend_metrics, blend_score_rows, choose_weight, embedding_config
from trainer.data import Dataset
from trainer.gate import decide
from trainer.refit import evaluate_then_refit, publish_fitted, refit_config
from trainer.spectral import evaluate_filter, evaluate_scores, fit_filter
from trainer.train import fit


def _dataset(m: int = 80, n: int = 50, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    dense = rng.random((m, n)) < 0.15
    dense[np.arange(m), rng.integers(0, n, m)] = True
    dense[np.arange(m), rng.integers(0, n, m)] = True
    users, items = np.nonzero(dense)
    test = rng.random(len(users)) < 0.25
    return Dataset.from_pairs(
        "tiny",
        np.array([f"u{i}" for i in range(m)]),
        np.array([f"i{j}" for j in range(n)]),
        (users[~test], items[~test]),
        (users[test], items[test]),
    )


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 3, "eval_every": 3, "spectral_k": 8, "lr": 300.0, "shrink_norm": 0.1}
    return TrainConfig.defaults("blend", **(base | kw))


def _dense_blend(scores_f: np.ndarray, scores_e: np.ndarray, w: float) -> np.ndarray:
    def z(x: np.ndarray) -> np.ndarray:
        sd = x.std(axis=1, keepdims=True)
        return np.where(sd > 0, (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1), 0)

    return z(scores_f.astype(np.float64)) + w * z(scores_e.astype(np.float64))


def test_blend_weight_is_only_for_the_blend_and_presets_are_valid() -> None:
    with pytest.raises(ConfigError, match="blend_weight: applies to objective 'blend' only"):
        TrainConfig.defaults("directspec+", blend_weight=1.0)
    cfg = TrainConfig.defaults("blend", preset="gowalla-blend")
    assert cfg.blend_weight == 1.6 and cfg.epochs == 20 and cfg.lr == 1000.0
    assert TrainConfig.defaults("blend", preset="citeulike-blend").blend_weight == 1.2
    assert embedding_config(cfg).objective == "directspec+"
    assert embedding_config(cfg).blend_weight is None and embedding_config(cfg).lr == 1000.0


def test_blend_metrics_match_an_independent_evaluation_for_every_weight() -> None:
    ds = _dataset()
    train, test = ds.train_matrix(), ds.test_matrix()
    filt = fit_filter(train, 8, 0.3)
    rng = np.random.default_rng(1)
    users = rng.normal(size=(ds.n_users, 6)).astype(np.float32)
    items = rng.normal(size=(ds.n_items, 6)).astype(np.float32)
    found = blend_metrics(filt, train, users, items, test, [0.0, 0.7, 3.0])
    for w in (0.7, 3.0):
        ref = evaluate_scores(blend_score_rows(filt, train, users, items, w), train, test)
        for key in ("recall@20", "ndcg@20", "recall@10"):
            assert found[w][key] == pytest.approx(ref[key], abs=1e-9)
    alone = evaluate_filter(filt, train, test)  # β = 0 ranks like the filter alone
    assert found[0.0]["recall@20"] == pytest.approx(alone["recall@20"], abs=1e-9)
    assert found[0.7]["recall@20"] != found[0.0]["recall@20"]


def test_choose_weight_follows_the_validation_split() -> None:
    ds = _dataset(m=120, n=60)
    cfg = _cfg()
    seen: list[str] = []

    def oracle(val: Dataset, c: TrainConfig) -> SimpleNamespace:
        """Embeddings whose scores are the validation pairs themselves: any β > 0 wins."""
        seen.append(c.objective)
        dense = val.test_matrix().toarray().astype(np.float32)
        return SimpleNamespace(
            user_emb=dense,
            item_emb=np.eye(val.n_items, dtype=np.float32),
            metrics={"recall@20": 1.0},
        )

    def noise(val: Dataset, c: TrainConfig) -> SimpleNamespace:
        rng = np.random.default_rng(0)
        return SimpleNamespace(
            user_emb=rng.normal(size=(val.n_users, 4)).astype(np.float32),
            item_emb=rng.normal(size=(val.n_items, 4)).astype(np.float32),
            metrics={"recall@20": 0.0},
        )

    good = choose_weight(ds, cfg, oracle)
    assert seen == ["directspec+"]
    top = max(good.scores.values())
    assert good.weight > 0 and good.scores[good.weight] == top > good.scores[0.0]
    assert good.weight == min(w for w, s in good.scores.items() if s == top)  # first on a tie
    bad = choose_weight(ds, cfg, noise)
    assert bad.weight == 0.0 and bad.scores[0.0] == max(bad.scores.values())
    assert bad.to_dict()["validation"]["0"] == bad.scores[0.0]


def test_fit_reports_the_blend_of_its_own_parts() -> None:
    ds = _dataset()
    res = fit(ds, _cfg(blend_weight=1.5), progress_bar=False)
    filt = res.extra["filter"]
    assert res.extra["blend_weight"] == 1.5 and res.extra["blend_selection"] is None
    train, test = ds.train_matrix(), ds.test_matrix()
    ref = evaluate_scores(
        blend_score_rows(filt, train, res.user_emb, res.item_emb, 1.5), train, test
    )
    assert res.metrics["recall@20"] == pytest.approx(ref["recall@20"], abs=1e-9)
    assert [h["model"] for h in res.history] == ["directspec+", "blend"]
    assert res.history[-1]["metrics"]["recall@20"] == res.metrics["recall@20"]
    alone = fit(ds, embedding_config(_cfg(blend_weight=1.5)), progress_bar=False)
    np.testing.assert_array_equal(alone.user_emb, res.user_emb)  # the same DirectSpec+ run


def test_a_chosen_weight_is_kept_by_the_refit_and_published(tmp_path: Path) -> None:
    ds = _dataset()
    cfg = _cfg()
    runs: list[TrainConfig] = []

    def train(d: Dataset, c: TrainConfig):
        runs.append(c)
        return fit(d, c, progress_bar=False)

    fitted = evaluate_then_refit(ds, cfg, train)
    weight = fitted.evaluation.extra["blend_weight"]
    assert fitted.evaluation.extra["blend_selection"]["weight"] == weight
    assert [r.blend_weight for r in runs] == [None, weight]  # the refit does not choose again
    assert refit_config(cfg, fitted.evaluation).blend_weight == weight
    reg = ModelRegistry(tmp_path / "reg")
    publish_fitted(fitted, ds, cfg, reg)
    m = reg.load()
    a = m.arrays
    assert a.kind == "blend" and m.manifest.model.kind == "blend"
    assert m.manifest.model.blend_weight == weight
    assert m.manifest.model.blend_selection["weight"] == weight
    np.testing.assert_array_equal(a.user_emb, fitted.model.user_emb)  # DirectSpec+'s vectors
    # the lists: the blend of the artifact's own filter and vectors, dense numpy, seen masked
    filt = SpectralFilter.of_arrays(a, m.manifest.model.spectral_alpha)
    hist = (filt.norm.toarray() > 0).astype(np.float64)
    f_scores = filt.scores(sp.csr_matrix(hist))
    want = _dense_blend(f_scores, a.user_emb @ a.item_emb.T, weight)
    for u in range(a.n_users):
        s = want[u].copy()
        s[a.seen(u)] = -np.inf
        order = [int(i) for i in np.lexsort((np.arange(len(s)), -s)) if np.isfinite(s[i])]
        got = [int(r) for r in a.top_rows[u] if r >= 0]
        assert got[:5] == order[:5]
        np.testing.assert_allclose(a.top_scores[u][:5], s[order[:5]], rtol=1e-4, atol=1e-5)


def test_the_gate_scores_a_blend_by_the_blend(tmp_path: Path) -> None:
    ds = _dataset()
    cfg = _cfg(blend_weight=2.0)
    res = fit(ds, cfg, progress_bar=False)
    fitted = evaluate_then_refit(ds, cfg, lambda d, c: fit(d, c, progress_bar=False), refit=False)
    reg = ModelRegistry(tmp_path / "reg")
    publish_fitted(fitted, ds, cfg, reg)
    serving = reg.load()
    gate = GateSettings()
    args = dict(recall_convention="lightgcn", spectrum=res.spectrum)
    same = decide(
        ds,
        res.user_emb,
        res.item_emb,
        serving,
        gate,
        new_filter=res.extra["filter"],
        new_blend_weight=2.0,
        **args,
    )
    assert same.new_value == pytest.approx(res.metrics["recall@20"], abs=1e-9)
    assert same.serving_value == pytest.approx(same.new_value, abs=1e-6)  # scored as served
    emb_only = decide(ds, res.user_emb, res.item_emb, serving, gate, **args)
    assert emb_only.new_value != pytest.approx(same.new_value)
