"""Training: single steps checked by hand in numpy, loop behaviour, and short real runs.

The one-step tests recompute the loss in numpy from the initial tables, differentiate it by
central finite differences and apply the optimiser's update rule by hand.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from contract.artifact import ModelRegistry
from contract.config import TrainConfig, default_synthetic_config
from trainer.data import Dataset, load_dataset
from trainer.encoders import MF, LightGCN
from trainer.evaluate import evaluate, evaluate_popularity
from trainer.objectives import BatchLoss
from trainer.optim import PlainSGD, RowAdam
from trainer.sampling import CSR, UserItemSampler
from trainer.synthetic import write_dataset
from trainer.train import (
    TrainingCancelled,
    TrainingDiverged,
    build_optimizer,
    fit,
    publish_result,
    row_catch_up,
    train_step,
)

CPU = torch.device("cpu")

# ----------------------------------------------------------------------------- numpy side


def np_normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_softmax_rows(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_balance(e, alpha, tau, s):
    x = np_normalize(e)
    x = x - alpha * np_softmax_rows(tau * (x @ x.T)) @ x
    return s * np.linalg.norm(x, axis=1, keepdims=True) * x


def np_alignment(z, w):
    return np.mean(np.log1p(np.exp(-(z * w).sum(1))))


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def tiny_train() -> sp.csr_matrix:
    rows = [0, 0, 1, 2, 2, 3, 4, 5, 5, 5]
    cols = [0, 1, 1, 2, 3, 0, 4, 1, 3, 4]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(6, 5))


# ----------------------------------------------------------------------------- one step by hand


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_mf_directspec_plus_sgd_step_equals_numpy(adaptive):
    r = tiny_train()
    cfg = TrainConfig.defaults(
        "directspec+",
        "mf",
        dim=3,
        lr=40.0,
        alpha=0.8,
        tau=3.0,
        shrink_norm=0.5,
        adaptive_tau=adaptive,
        tau0=2.0,
        tau1=3.5,
    )
    enc = MF(6, 5, 3, sparse=True, generator=torch.Generator().manual_seed(0))
    u0 = enc.user.weight.detach().numpy().astype(np.float64)
    i0 = enc.item.weight.detach().numpy().astype(np.float64)
    users = np.array([0, 2, 2, 5])  # user 2 twice: its gradient must accumulate
    items = np.array([1, 3, 2, 1])  # item 1 twice
    dense = r.toarray()
    if adaptive:  # tau0 for pairs sharing a training neighbour, from the dense matrix
        tau_u = np.where(dense[users] @ dense[users].T > 0, 2.0, 3.5)
        tau_i = np.where(dense[:, items].T @ dense[:, items] > 0, 2.0, 3.5)
        assert (tau_u == 2.0).any() and (tau_u == 3.5).any()
    else:
        tau_u = tau_i = 3.0

    def loss(uu, ii):
        z = np_balance(uu[users], 0.8, tau_u, 0.5)
        w = np_balance(ii[items], 0.8, tau_i, 0.5)
        return np_alignment(z, w)

    gu = numeric_grad(lambda x: loss(x, i0), u0)
    gi = numeric_grad(lambda x: loss(u0, x), i0)

    bl = BatchLoss(cfg, enc, CSR(r, CPU), CSR(r.T.tocsr(), CPU))
    opt = build_optimizer(cfg, enc)
    got = train_step(bl, opt, (torch.tensor(users), torch.tensor(items)))
    assert got.item() == pytest.approx(loss(u0, i0), rel=1e-5)
    du = enc.user.weight.detach().numpy() - u0
    di = enc.item.weight.detach().numpy() - i0
    np.testing.assert_allclose(du, -40.0 * gu, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(di, -40.0 * gi, rtol=2e-3, atol=1e-6)
    assert np.abs(du[[1, 3, 4]]).max() == 0  # rows outside the batch are untouched
    assert np.abs(du).max() > 1e-3  # and the step is not trivially small


def np_two_layer_propagation(r):
    """(m + n, m + n) LightGCN operator (I + A + A^2) / 3 for interactions r (m, n), with A the
    symmetric-normalised bipartite adjacency."""
    m, n = r.shape
    a = np.zeros((m + n, m + n))
    a[:m, m:] = r.toarray()
    a[m:, :m] = r.toarray().T
    d = a.sum(1)
    a = a / np.sqrt(np.outer(d, d))
    return (np.eye(m + n) + a + a @ a) / 3


@pytest.mark.parametrize(
    "batches",
    [
        [([1, 4, 4], [0, 4, 2])],
        [([1, 4, 4], [0, 4, 2]), ([0, 2, 5], [1, 3, 3])],  # sub_batches 2
    ],
    ids=["one batch", "two batches in one step"],
)
def test_one_lightgcn_step_with_reg_equals_numpy(batches, monkeypatch):
    """One step moves by -lr * (sum of the batches' gradients) (numpy), from one propagation
    however many batches the step sums (sub_batches)."""
    r = tiny_train()
    cfg = TrainConfig.defaults(
        "directspec+",
        "lightgcn",
        dim=3,
        lr=5.0,
        n_layers=2,
        reg=0.01,
        shrink_norm=0.5,
        sub_batches=len(batches),
    )
    enc = LightGCN(r, 3, n_layers=2, generator=torch.Generator().manual_seed(1))
    e0 = enc.embedding.detach().numpy().astype(np.float64)
    m = 6
    prop = np_two_layer_propagation(r)
    batches = [(np.array(u), np.array(i)) for u, i in batches]

    def loss(e):
        f = prop @ e
        total = 0.0
        for users, items in batches:
            z = np_balance(f[users], 1.0, 3.0, 0.5)
            w = np_balance(f[m + items], 1.0, 3.0, 0.5)
            total += np_alignment(z, w) + 0.01 * ((z**2).sum(1) + (w**2).sum(1)).mean()
        return total

    g = numeric_grad(loss, e0)
    calls = []
    real_final = LightGCN.final
    monkeypatch.setattr(LightGCN, "final", lambda self: calls.append(1) or real_final(self))
    group = tuple((torch.tensor(u), torch.tensor(i)) for u, i in batches)
    bl = BatchLoss(cfg, enc, CSR(r, CPU), None)
    train_step(bl.summed, build_optimizer(cfg, enc), group)
    assert len(calls) == 1
    delta = enc.embedding.detach().numpy() - e0
    np.testing.assert_allclose(delta, -5.0 * g, rtol=2e-3, atol=1e-6)
    assert np.abs(delta).max() > 1e-4  # not trivially small (max ~2e-4 vs atol 1e-6)


def test_one_bpr_adam_step_equals_numpy():
    # Adam's first step is -lr * g / (|g| + eps) elementwise (bias corrections cancel)
    r = tiny_train()
    cfg = TrainConfig.defaults("bpr", "mf", dim=3, lr=0.01, reg=0.1, optimizer="adam")
    enc = MF(6, 5, 3, init="normal", std=0.1, generator=torch.Generator().manual_seed(2))
    u0 = enc.user.weight.detach().numpy().astype(np.float64)
    i0 = enc.item.weight.detach().numpy().astype(np.float64)
    users, pos, neg = np.array([0, 3]), np.array([1, 0]), np.array([4, 2])

    def loss(uu, ii):
        u, p, n = uu[users], ii[pos], ii[neg]
        diff = (u * p).sum(1) - (u * n).sum(1)
        l2 = ((u**2).sum() + (p**2).sum() + (n**2).sum()) / (2 * len(users))
        return np.mean(np.log1p(np.exp(-diff))) + 0.1 * l2

    gu = numeric_grad(lambda x: loss(x, i0), u0)
    gi = numeric_grad(lambda x: loss(u0, x), i0)
    opt = build_optimizer(cfg, enc)
    bl = BatchLoss(cfg, enc, CSR(r, CPU), None)
    train_step(bl, opt, tuple(torch.tensor(a) for a in (users, pos, neg)))
    np.testing.assert_allclose(
        enc.user.weight.detach().numpy() - u0, -0.01 * gu / (np.abs(gu) + 1e-8), atol=1e-5
    )
    np.testing.assert_allclose(
        enc.item.weight.detach().numpy() - i0, -0.01 * gi / (np.abs(gi) + 1e-8), atol=1e-5
    )


def test_sparse_rows_with_plain_sgd_equal_dense_torch_sgd():
    """nn.Embedding(sparse=True) + PlainSGD == dense tables + torch.optim.SGD, with lr decay."""
    rng = np.random.default_rng(0)
    r = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    cfg = TrainConfig.defaults("directspec+", "mf", dim=8, batch_size=16, shrink_norm=0.3)
    fast = MF(40, 30, 8, sparse=True, generator=torch.Generator().manual_seed(5))
    ref = MF(40, 30, 8, sparse=False, generator=torch.Generator().manual_seed(5))
    opts = [build_optimizer(cfg, fast), torch.optim.SGD(ref.parameters(), lr=cfg.lr)]
    assert isinstance(opts[0], PlainSGD)
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5) for o in opts]
    losses = [BatchLoss(cfg, e, CSR(r, CPU), None) for e in (fast, ref)]
    sampler = UserItemSampler(CSR(r, CPU), 16, torch.Generator().manual_seed(0))
    for _ in range(3):
        for batch in sampler.epoch():
            for bl, opt in zip(losses, opts, strict=True):
                train_step(bl, opt, batch)
        for sch in scheds:
            sch.step()
    assert fast.user.weight.grad.is_sparse and not ref.user.weight.grad.is_sparse
    assert opts[0].param_groups[0]["lr"] == cfg.lr / 8
    for a, b in ((fast.user, ref.user), (fast.item, ref.item)):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
    start = MF(40, 30, 8, generator=torch.Generator().manual_seed(5)).user.weight
    assert (fast.user.weight - start).abs().max() > 1e-2  # the tables did move


@pytest.mark.parametrize("flush_midway", [False, True])
def test_sparse_adam_equals_dense_adam(flush_midway):
    """RowAdam (optimizer "sparse_adam") on sparse row gradients == torch.optim.Adam on the
    dense ones, over 40 BPR steps where most rows skip many steps and the lr decays: the
    skipped momentum steps are applied when a row comes back and at flush(). A flush in the
    middle changes nothing; a row no batch touched keeps its initial value exactly."""
    rng = np.random.default_rng(1)
    r = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    cfg = TrainConfig.defaults("bpr", "mf", dim=8, batch_size=6, optimizer="sparse_adam", lr=0.02)
    fast = MF(41, 31, 8, sparse=True, generator=torch.Generator().manual_seed(5))
    dense = MF(41, 31, 8, sparse=False, generator=torch.Generator().manual_seed(5))
    assert isinstance(build_optimizer(cfg, fast), RowAdam)
    # eps 1e-12: RowAdam leaves eps out of the deferred steps (1e-8 moves them by ~1e-4
    # relative on this tiny problem's small gradients)
    opt = RowAdam(list(fast.parameters()), lr=0.02, eps=1e-12)
    ref = torch.optim.Adam(list(dense.parameters()), lr=0.02, eps=1e-12)
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.97) for o in (opt, ref)]
    losses = [BatchLoss(cfg, e, CSR(r, CPU), None) for e in (fast, dense)]
    g = np.random.default_rng(2)
    hook = row_catch_up(opt, fast)
    for step in range(40):  # 6 of 40 users per batch: rows skip ~7 steps on average
        batch = tuple(torch.as_tensor(g.integers(0, hi, 6)) for hi in (40, 30, 30))
        train_step(losses[0].summed, opt, (batch,), hook)
        train_step(losses[1], ref, batch)
        for sch in scheds:
            sch.step()
        if flush_midway and step == 19:
            opt.flush()
    opt.flush()
    for a, b in ((fast.user, dense.user), (fast.item, dense.item)):
        torch.testing.assert_close(a.weight.detach(), b.weight.detach(), rtol=0, atol=2e-6)
    start = MF(41, 31, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(fast.user.weight[40], start.user.weight[40])
    assert torch.equal(fast.item.weight[30], start.item.weight[30])
    assert (fast.user.weight[:40] - start.user.weight[:40]).abs().max() > 0.05


def test_sparse_adam_without_flush_differs_by_the_deferred_steps():
    """Before flush() the rows not in the last batch lag dense Adam (their momentum steps are
    deferred): the flush is what makes the tables right, so the loop must call it."""
    rng = np.random.default_rng(1)
    r = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    cfg = TrainConfig.defaults("bpr", "mf", dim=8, batch_size=6, optimizer="sparse_adam", lr=0.02)
    fast = MF(41, 31, 8, sparse=True, generator=torch.Generator().manual_seed(5))
    opt = build_optimizer(cfg, fast)
    bl = BatchLoss(cfg, fast, CSR(r, CPU), None)
    g = np.random.default_rng(2)
    for _ in range(10):
        train_step(bl, opt, tuple(torch.as_tensor(g.integers(0, hi, 6)) for hi in (40, 30, 30)))
    before = fast.user.weight.detach().clone()
    opt.flush()
    assert (fast.user.weight - before).abs().max() > 1e-3


def test_sparse_adam_first_step_is_the_adam_formula():
    """Step 1 of Adam moves each touched entry by -lr * g / (|g| + eps) (bias-corrected moments)."""
    cfg = TrainConfig.defaults("bpr", "mf", dim=4, optimizer="sparse_adam", lr=0.01, reg=0.0)
    enc = MF(6, 5, 4, sparse=True, generator=torch.Generator().manual_seed(0))
    u0, i0 = enc.user.weight.detach().clone(), enc.item.weight.detach().clone()
    users, pos, neg = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 1]), torch.tensor([4, 4, 0])
    train_step(
        BatchLoss(cfg, enc, CSR(sp.csr_matrix((6, 5)), CPU), None),
        build_optimizer(cfg, enc),
        (users, pos, neg),
    )
    x = (u0[users] * i0[pos]).sum(-1) - (u0[users] * i0[neg]).sum(-1)
    w = -torch.sigmoid(-x) / 3  # d loss / d x of mean(-log sigmoid(x))
    gu = torch.zeros_like(u0).index_add_(0, users, w[:, None] * (i0[pos] - i0[neg]))
    gi = torch.zeros_like(i0).index_add_(0, pos, w[:, None] * u0[users])
    gi.index_add_(0, neg, -w[:, None] * u0[users])
    for new, old, grad in ((enc.user.weight, u0, gu), (enc.item.weight, i0, gi)):
        expected = old - 0.01 * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(new.detach(), expected, rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("small")
    write_dataset(out, n_users=120, n_items=80, seed=1)
    return load_dataset(out)


def quick(objective="directspec+", encoder="mf", **kw) -> TrainConfig:
    base = {"dim": 16, "epochs": 2, "eval_every": 1, "batch_size": 64, "seed": 0}
    return TrainConfig.defaults(objective, encoder, **(base | kw))


def test_fit_is_reproducible_and_reports_progress(small_ds):
    seen = []
    a = fit(small_ds, quick(), progress=seen.append, progress_bar=False)
    b = fit(small_ds, quick(), progress_bar=False)
    np.testing.assert_array_equal(a.user_emb, b.user_emb)
    np.testing.assert_array_equal(a.item_emb, b.item_emb)
    c = fit(small_ds, quick(seed=1), progress_bar=False)
    assert not np.array_equal(a.user_emb, c.user_emb)
    assert [s["epoch"] for s in seen] == [1, 2]
    assert set(seen[0]) >= {"epoch", "epochs", "loss", "metrics", "seconds"}
    assert seen[1]["metrics"] == a.metrics
    assert [h["epoch"] for h in a.history] == [1, 2]
    spec = a.history[-1]["spectrum"]
    assert set(spec) == {"users", "items", "all"}
    assert 1 <= spec["all"]["normalized"]["effective_rank"] <= 16
    assert a.user_emb.shape == (small_ds.n_users, 16) and a.user_emb.dtype == np.float32
    # metrics are the evaluation of the returned embeddings on the test split
    want = evaluate(
        torch.from_numpy(a.user_emb),
        torch.from_numpy(a.item_emb),
        small_ds.train_matrix(),
        small_ds.test_matrix(),
    )
    assert a.metrics == pytest.approx(want)


@pytest.mark.parametrize(
    ("objective", "encoder", "extra"),
    [
        ("bpr", "mf", {"epochs": 3, "lr": 0.01}),
        ("bpr", "lightgcn", {"epochs": 3, "lr": 0.01, "n_layers": 2}),
        ("directau", "mf", {"epochs": 3, "lr": 0.01}),
        # shrink_norm 0.5 so that the alignment loss moves visibly away from log 2
        ("directspec+", "lightgcn", {"epochs": 2, "n_layers": 2, "shrink_norm": 0.5}),
        ("directspec", "mf", {"epochs": 2, "alpha": 0.05, "shrink_norm": 0.5}),
        ("directspec+", "mf", {"epochs": 2, "adaptive_tau": True, "shrink_norm": 0.5}),
    ],
)
def test_every_objective_trains_and_lowers_its_loss(small_ds, objective, encoder, extra):
    res = fit(small_ds, quick(objective, encoder, eval_every=1, **extra), progress_bar=False)
    losses = [h["loss"] for h in res.history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert np.isfinite(res.user_emb).all() and np.isfinite(res.item_emb).all()


def test_sub_batches_take_one_step_per_group_and_see_every_batch(small_ds, monkeypatch):
    """An epoch of n_train // B batches in groups of 3: ceil(batches / 3) optimiser steps."""
    steps = []
    real_step = PlainSGD.step
    monkeypatch.setattr(
        PlainSGD, "step", lambda self, closure=None: steps.append(1) or real_step(self)
    )
    seen_batches = []
    real_summed = BatchLoss.summed
    monkeypatch.setattr(
        BatchLoss,
        "summed",
        lambda self, group: seen_batches.append(len(group)) or real_summed(self, group),
    )
    cfg = quick(epochs=1, sub_batches=3)
    res = fit(small_ds, cfg, progress_bar=False)
    batches = small_ds.train_matrix().nnz // cfg.batch_size
    assert sum(seen_batches) == batches and max(seen_batches) == 3
    assert len(steps) == -(-batches // 3)
    assert res.metrics["recall@20"] > 0


def test_early_stopping_uses_validation_and_stops(small_ds):
    # a learning rate this small leaves the metric flat: no improvement -> stop after patience
    cfg = quick(epochs=10, lr=1e-9, early_stop_patience=2)
    res = fit(small_ds, cfg, progress_bar=False)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1
    assert all(h["split"] == "validation" for h in res.history)
    assert res.history[0]["metrics"]["n_users"] <= small_ds.n_users
    want = evaluate(
        torch.from_numpy(res.user_emb),
        torch.from_numpy(res.item_emb),
        small_ds.train_matrix(),
        small_ds.test_matrix(),
    )
    assert res.metrics == pytest.approx(want)


def test_early_stopping_counts_only_gains_above_min_delta(small_ds):
    """With no tolerance the rising validation metric keeps the run going; with a tolerance
    above every gain it has, the first evaluation stays the best and the run stops after
    `patience` more."""
    rising = fit(small_ds, quick("bpr", epochs=6, early_stop_patience=2), progress_bar=False)
    scores = [h["metrics"]["recall@20"] for h in rising.history]
    gains = np.diff(scores)
    assert not rising.stopped_early and rising.epochs_run == 6 and gains.min() > 0
    tolerance = float(max(scores) - scores[0]) + 1e-6
    flat = fit(
        small_ds,
        quick("bpr", epochs=6, early_stop_patience=2, early_stop_min_delta=tolerance),
        progress_bar=False,
    )
    assert flat.stopped_early and flat.epochs_run == 3 and flat.best_epoch == 1
    assert [h["metrics"] for h in flat.history] == [h["metrics"] for h in rising.history[:3]]
    one = fit(small_ds, quick("bpr", epochs=1, early_stop_patience=2), progress_bar=False)
    np.testing.assert_array_equal(flat.user_emb, one.user_emb)  # epoch 1's embeddings
    assert flat.metrics == one.metrics


def test_should_stop_cancels_between_epochs(small_ds):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(TrainingCancelled):
        fit(small_ds, quick(epochs=5), should_stop=stop, progress_bar=False)
    assert len(calls) == 2


def test_divergence_names_the_epoch(small_ds):
    cfg = quick("bpr", optimizer="sgd", lr=1e30, init_std=10.0, epochs=3)
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        fit(small_ds, cfg, progress_bar=False)


def test_publish_result_writes_a_loadable_artifact(small_ds, tmp_path):
    cfg = quick()
    res = fit(small_ds, cfg, progress_bar=False)
    reg = ModelRegistry(tmp_path / "models")
    version = publish_result(res, small_ds, cfg, reg)
    loaded = reg.load()
    assert loaded.version == version
    np.testing.assert_array_equal(loaded.arrays.user_emb, res.user_emb)
    np.testing.assert_array_equal(loaded.arrays.user_ids, small_ds.user_ids)
    assert loaded.manifest.config.to_dict() == cfg.to_dict()
    assert loaded.manifest.metrics["recall@20"] == pytest.approx(res.metrics["recall@20"])
    assert loaded.manifest.dataset_fingerprint == small_ds.fingerprint()
    assert len(loaded.manifest.training.history) == 2
    # seen: every known pair of the user, the held-out ones too (never recommended)
    known = np.concatenate(
        [
            small_ds.train_items[small_ds.train_users == 0],
            small_ds.test_items[small_ds.test_users == 0],
        ]
    )
    assert len(small_ds.test_items[small_ds.test_users == 0]) > 0
    assert loaded.arrays.seen(0).tolist() == sorted(set(known.tolist()))
    # each user's top unseen items by inner product, computed once here, not by the service
    a = loaded.arrays
    assert loaded.manifest.model.kind == "embedding" and loaded.manifest.model.top_k == 80
    assert a.top_rows is not None and a.top_scores is not None and a.top_rows.shape == (120, 80)
    for u in (0, 1, 57):
        scores = a.item_emb.astype(np.float64) @ a.user_emb[u].astype(np.float64)
        scores[a.seen(u)] = -np.inf
        order = np.lexsort((np.arange(80), -scores))[: 80 - len(a.seen(u))]
        assert a.top_rows[u, : len(order)].tolist() == order.tolist()
        assert (a.top_rows[u, len(order) :] == -1).all()
        np.testing.assert_allclose(
            a.top_scores[u, : len(order)], scores[order], rtol=1e-5, atol=1e-6
        )
    # fitted on the training pairs only (no refit asked for)
    assert loaded.manifest.to_dict()["trained_on"] == {
        "pairs": "train",
        "n_pairs": small_ds.n_train,
        "epochs": cfg.epochs,
        "evaluated_on": {"train_pairs": small_ds.n_train, "test_pairs": small_ds.n_test},
    }
    # 80 items: exact search chosen without building an index, and the choice recorded
    index = loaded.manifest.index
    assert index is not None and (index.kind, index.target) == ("flat", 0.95)
    assert index.reason == "80 items < 20000: exact search is cheaper than any index"
    assert a.item_index is None


def test_publish_result_ships_the_chosen_index(small_ds, tmp_path, monkeypatch):
    from contract import annindex
    from service.serving import ServingModel
    from service.settings import IndexSettings
    from trainer import train as train_module

    # any catalogue above 50 items gets an index, exact search made slow: one must ship
    choose = functools.partial(annindex.choose_index, small_catalogue=50)
    monkeypatch.setattr(train_module, "choose_index", choose)
    monkeypatch.setattr(
        annindex, "exact_latency", lambda _i, q, _k=20, _b=None: np.full(len(q), 1.0)
    )
    cfg = quick()
    res = fit(small_ds, cfg, progress_bar=False)
    reg = ModelRegistry(tmp_path / "models")
    publish_result(res, small_ds, cfg, reg, index_recall=0.9)
    loaded = reg.load()
    info = loaded.manifest.index
    assert info is not None and info.kind in ("ivf", "hnsw") and info.target == 0.9
    assert info.recall is not None and info.recall >= 0.9 and info.n_queries == 120
    assert loaded.arrays.item_index is not None
    served = ServingModel.build(loaded, IndexSettings())
    assert (served.index.kind, served.index.source) == (info.kind, "artifact")
    # 0: nothing chosen, nothing shipped
    publish_result(res, small_ds, cfg, reg, index_recall=0)
    loaded = reg.load()
    assert loaded.manifest.index is None and loaded.arrays.item_index is None


# ----------------------------------------------------------------------------- synthetic default


@pytest.fixture(scope="module")
def default_ds(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("default")
    write_dataset(out)
    return load_dataset(out)


@pytest.mark.slow
def test_default_config_beats_popularity_and_keeps_its_spectrum(default_ds):
    cfg = default_synthetic_config(eval_every=5)
    res = fit(default_ds, cfg, progress_bar=False)
    pop = evaluate_popularity(default_ds.train_matrix(), default_ds.test_matrix())
    # measured: ~0.31 vs popularity 0.141
    assert res.metrics["recall@20"] > 1.8 * pop["recall@20"]
    assert res.metrics["ndcg@20"] > 1.8 * pop["ndcg@20"]
    eranks = [h["spectrum"]["all"]["normalized"]["effective_rank"] for h in res.history]
    assert min(eranks) > 0.75 * cfg.dim  # measured ~56 of 64


@pytest.mark.slow
def test_alignment_only_collapses(default_ds):
    cfg = default_synthetic_config(objective="align", alpha=0.0, epochs=6, eval_every=2)
    res = fit(default_ds, cfg, progress_bar=False)
    eranks = [h["spectrum"]["all"]["normalized"]["effective_rank"] for h in res.history]
    # measured: 64 at init -> ~5 after 3 epochs -> ~1.0 after 6
    assert eranks[0] < 0.5 * cfg.dim
    assert eranks[-1] < eranks[0]
    assert eranks[-1] < 3.0
