"""Fitting, evaluating and publishing the spectral filter (trainer/spectral.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from contract.artifact import ModelRegistry
from contract.config import TrainConfig
from trainer.data import Dataset
from trainer.evaluate import ndcg_at_k, recall_at_k
from trainer.spectral import evaluate_filter, fit_filter, top_lists, top_singular
from trainer.train import fit, publish_result


def _dataset(m: int = 60, n: int = 40, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    dense = rng.random((m, n)) < 0.15
    dense[np.arange(m), rng.integers(0, n, m)] = True  # every user has an item
    users, items = np.nonzero(dense)
    test = rng.random(len(users)) < 0.25
    return Dataset.from_pairs(
        "tiny",
        np.array([f"u{i}" for i in range(m)]),
        np.array([f"i{j}" for j in range(n)]),
        (users[~test], items[~test]),
        (users[test], items[test]),
    )


def _dense_scores(train: np.ndarray, k: int, alpha: float) -> np.ndarray:
    du, di = train.sum(1), train.sum(0)
    with np.errstate(divide="ignore"):
        su, si = np.where(du > 0, du**-0.5, 0.0), np.where(di > 0, di**-0.5, 0.0)
    rn = su[:, None] * train * si[None, :]
    _, _, vt = np.linalg.svd(rn)
    v = vt[:k].T
    return train @ rn.T @ rn + alpha * (train * si) @ v @ v.T @ np.diag(np.sqrt(di))


def test_top_singular_matches_dense_svd_both_solvers(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    mat = sp.csr_matrix((rng.random((80, 50)) < 0.2).astype(np.float32))
    dense_v, dense_s = top_singular(mat, 6, seed=0)
    want = np.linalg.svd(mat.toarray().astype(np.float64), compute_uv=False)[:6]
    np.testing.assert_allclose(dense_s, want, rtol=1e-6)
    monkeypatch.setattr("trainer.spectral.DENSE_SVD_UP_TO", 10)  # the sparse solvers
    for solver, tol in (("arpack", 1e-5), ("randomized", 1e-4)):
        v, s = top_singular(mat, 6, seed=0, solver=solver)
        np.testing.assert_allclose(s, want, rtol=tol)
        # the same subspace: projectors agree (signs and order within ties aside)
        np.testing.assert_allclose(v @ v.T, dense_v @ dense_v.T, atol=tol * 10)
    again, _ = top_singular(mat, 6, seed=0, solver="randomized")
    np.testing.assert_array_equal(again, top_singular(mat, 6, seed=0, solver="randomized")[0])


def test_evaluate_filter_matches_per_user_metrics() -> None:
    ds = _dataset()
    train, test = ds.train_matrix(), ds.test_matrix()
    filt = fit_filter(train, k=8, alpha=0.3)
    got = evaluate_filter(filt, train, test, ks=(5, 10))
    scores = _dense_scores(train.toarray().astype(np.float64), 8, 0.3)
    scores[train.toarray() > 0] = -np.inf
    recalls, ndcgs = [], []
    for u in range(ds.n_users):
        rel = test[u].indices
        if len(rel) == 0:
            continue
        ranked = np.lexsort((np.arange(ds.n_items), -scores[u]))
        recalls.append(recall_at_k(ranked, rel, 10))
        ndcgs.append(ndcg_at_k(ranked, rel, 10))
    assert got["n_users"] == len(recalls)
    assert got["recall@10"] == pytest.approx(np.mean(recalls), abs=1e-9)
    assert got["ndcg@10"] == pytest.approx(np.mean(ndcgs), abs=1e-9)


def test_two_threads_score_like_one() -> None:
    ds = _dataset(m=90)
    train, test = ds.train_matrix(), ds.test_matrix()
    filt = fit_filter(train, k=8, alpha=0.3)
    one = evaluate_filter(filt, train, test, batch_users=32, threads=1)
    two = evaluate_filter(filt, train, test, batch_users=32, threads=2)
    assert one == two


def test_top_lists_are_the_best_unseen_items() -> None:
    ds = _dataset()
    train = ds.train_matrix()
    seen = train + ds.test_matrix()
    filt = fit_filter(train, k=8, alpha=0.3)
    rows, scores = top_lists(filt, train, seen, 10, batch_users=16)
    dense = _dense_scores(train.toarray().astype(np.float64), 8, 0.3)
    dense[seen.toarray() > 0] = -np.inf
    for u in range(ds.n_users):
        order = np.lexsort((np.arange(ds.n_items), -dense[u]))[:10]
        valid = np.isfinite(dense[u, order])
        np.testing.assert_array_equal(rows[u][valid], order[valid])
        np.testing.assert_allclose(scores[u][valid], dense[u, order][valid], rtol=1e-4)
        assert (rows[u][~valid] == -1).all()


def test_fit_and_publish_a_spectral_model(tmp_path: Path) -> None:
    ds = _dataset()
    cfg = TrainConfig.defaults("spectral", spectral_k=8)
    result = fit(ds, cfg)
    assert result.epochs_run == 1 and result.history[0]["metrics"] == result.metrics
    assert 0 < result.metrics["recall@20"] <= 1
    # the embeddings are the low-pass part: users @ items.T = alpha * ideal filter
    filt = result.extra["filter"]
    low = result.user_emb @ result.item_emb.T
    lin_only = fit_filter(ds.train_matrix(), 8, 0.0).scores(ds.train_matrix())
    np.testing.assert_allclose(low, filt.scores(ds.train_matrix()) - lin_only, atol=1e-5)

    registry = ModelRegistry(tmp_path / "models")
    version = publish_result(result, ds, cfg, registry)
    loaded = registry.load(version)
    a = loaded.arrays
    assert a.kind == "spectral" and a.dim == 8
    assert loaded.manifest.model.kind == "spectral"
    assert a.top_rows is not None and a.top_rows.shape == (ds.n_users, min(100, ds.n_items))
    np.testing.assert_array_equal(a.filter_indices, filt.norm.indices)
    np.testing.assert_allclose(a.filter_data, filt.norm.data)
    assert loaded.manifest.config.objective == "spectral"
    # each user's list ranks the filter's scores of their binary training row, seen masked
    want = _dense_scores(ds.train_matrix().toarray().astype(np.float64), 8, cfg.spectral_alpha)
    for u in range(ds.n_users):
        s = want[u].copy()
        s[a.seen(u)] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))[:5]
        np.testing.assert_allclose(a.top_scores[u][:5], s[order], rtol=1e-4, atol=1e-5)


def test_stable_topk_breaks_ties_by_lower_column() -> None:
    from trainer.spectral import stable_topk

    rng = np.random.default_rng(5)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # many ties
    scores[3] = 1.0  # a row of equal scores
    scores[7, 5] = -np.inf
    for k in (1, 4, 10, 30):
        cols, vals = stable_topk(scores, k)
        for i in range(len(scores)):
            want = np.lexsort((np.arange(30), -scores[i]))[:k]
            np.testing.assert_array_equal(cols[i], want)
            np.testing.assert_array_equal(vals[i], scores[i, want])
