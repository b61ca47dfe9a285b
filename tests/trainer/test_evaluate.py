"""Batched evaluate() / evaluate_popularity() against a slow per-user numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.evaluate import evaluate, evaluate_popularity, popularity_ranking


def reference(
    scores: np.ndarray,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    ks: tuple[int, ...],
    convention: str,
) -> dict[str, float]:
    """Explicit loop over users with np.argsort; metric formulas written out again here."""
    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg")}
    n_eval = 0
    for u in range(scores.shape[0]):
        relevant = set(test[u].indices.tolist())
        if not relevant:
            continue
        n_eval += 1
        seen = set(train[u].indices.tolist())
        order = np.argsort(-scores[u], kind="stable")
        candidates = [i for i in order.tolist() if i not in seen]
        for k in ks:
            top = candidates[:k]
            hits = [1.0 if i in relevant else 0.0 for i in top]
            denom = len(relevant) if convention == "lightgcn" else min(k, len(relevant))
            totals[f"recall@{k}"] += sum(hits) / denom
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
            totals[f"ndcg@{k}"] += dcg / idcg
    out = {key: val / n_eval for key, val in totals.items()}
    out["n_users"] = n_eval
    return out


def random_problem(seed: int, m: int = 60, n: int = 35, d: int = 6):
    """Random embeddings and interactions: some users without test items, one user whose
    training items leave fewer than K candidates, and test pairs that are also in train."""
    rng = np.random.default_rng(seed)
    user_emb, item_emb = rng.normal(size=(m, d)), rng.normal(size=(n, d))
    train = sp.random(m, n, density=0.25, random_state=rng, format="csr")
    test = sp.random(m, n, density=0.15, random_state=rng, format="lil")
    test[: m // 6] = 0  # users without test items are skipped
    train = train.tolil()
    train[m - 1, : n - 3] = 1  # only 3 candidates left for the last user
    test[m - 1, 0] = 1  # a test item that is masked: never a hit
    test[m - 1, n - 1] = 1
    train, test = sp.csr_matrix(train), sp.csr_matrix(test)
    train.data[:], test.data[:] = 1.0, 1.0
    return user_emb, item_emb, train, test


def assert_metrics_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert got["n_users"] == want["n_users"]
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("batch_users", [1, 7, 50, 1000])
@pytest.mark.parametrize("convention", ["lightgcn", "reference"])
def test_evaluate_matches_reference(batch_users: int, convention: str) -> None:
    user_emb, item_emb, train, test = random_problem(seed=batch_users)
    ks = (1, 5, 10, 40)  # 40 > n = 35 items
    got = evaluate(
        torch.from_numpy(user_emb),
        torch.from_numpy(item_emb),
        train,
        test,
        ks=ks,
        recall_convention=convention,
        batch_users=batch_users,
    )
    want = reference(user_emb @ item_emb.T, train, test, ks, convention)
    assert 0 < want["n_users"] <= 60 - 10  # the first 10 users have no test items
    assert_metrics_equal(got, want)


def test_evaluate_float32_close_to_reference() -> None:
    user_emb, item_emb, train, test = random_problem(seed=3, m=200, n=80, d=16)
    got = evaluate(
        torch.from_numpy(user_emb).float(), torch.from_numpy(item_emb).float(), train, test
    )
    scores = (user_emb.astype(np.float32) @ item_emb.astype(np.float32).T).astype(np.float64)
    want = reference(scores, train, test, (10, 20), "lightgcn")
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_training_items_are_never_hits() -> None:
    # test == train: every test item is masked, so all metrics must be exactly 0 even though
    # the embeddings score the training items highest.
    m, n = 20, 15
    train = sp.csr_matrix(np.eye(m, n) + np.eye(m, n, 1))
    user_emb = torch.from_numpy(train.toarray())  # score(u, i) = 1 for seen items, else 0
    got = evaluate(user_emb, torch.eye(n, dtype=torch.float64), train, train, ks=(1, 5))
    assert got == {"recall@1": 0.0, "ndcg@1": 0.0, "recall@5": 0.0, "ndcg@5": 0.0, "n_users": 15}


def test_perfect_scores_give_one() -> None:
    # scores = test matrix itself: every test item outranks everything else
    rng = np.random.default_rng(1)
    test = sp.csr_matrix((rng.random((30, 25)) < 0.1).astype(np.float64))
    train = sp.csr_matrix((30, 25))
    got = evaluate(torch.from_numpy(test.toarray()), torch.eye(25, dtype=torch.float64),
                   train, test, ks=(25,), recall_convention="reference")  # fmt: skip
    assert got["recall@25"] == pytest.approx(1.0) and got["ndcg@25"] == pytest.approx(1.0)


def test_duplicate_and_zero_entries_are_binary() -> None:
    user_emb, item_emb, train, test = random_problem(seed=5)
    coo = test.tocoo()
    dup = sp.coo_matrix(
        (
            np.r_[coo.data, coo.data * 3, [0.0]],
            (np.r_[coo.row, coo.row, [0]], np.r_[coo.col, coo.col, [0]]),
        ),
        shape=test.shape,
    )  # every pair twice, plus an explicit zero at (0, 0)
    args = torch.from_numpy(user_emb), torch.from_numpy(item_emb)
    assert_metrics_equal(evaluate(*args, train, dup.tocsr()), evaluate(*args, train, test))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 25),
    n=st.integers(1, 25),
    k=st.integers(1, 30),
    batch=st.integers(1, 30),
)
def test_property_bounds_and_reference(seed: int, m: int, n: int, k: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    scores_u, scores_i = rng.normal(size=(m, 3)), rng.normal(size=(n, 3))
    train = sp.csr_matrix((rng.random((m, n)) < 0.3).astype(np.float64))
    test = sp.csr_matrix((rng.random((m, n)) < 0.3).astype(np.float64))
    got = evaluate(torch.from_numpy(scores_u), torch.from_numpy(scores_i), train, test,
                   ks=(k,), batch_users=batch)  # fmt: skip
    assert got["n_users"] == int((np.diff(test.indptr) > 0).sum())
    if got["n_users"] == 0:
        assert got[f"recall@{k}"] == 0.0
        return
    assert 0.0 <= got[f"recall@{k}"] <= 1.0 and 0.0 <= got[f"ndcg@{k}"] <= 1.0
    assert_metrics_equal(got, reference(scores_u @ scores_i.T, train, test, (k,), "lightgcn"))


def popularity_reference(train, test, ks, convention):
    counts = np.asarray(train.sum(axis=0)).reshape(-1)
    # most popular first, ties by lower item row: scores that argsort(-s, stable) reproduces
    return reference(np.tile(counts, (train.shape[0], 1)), train, test, ks, convention)


@pytest.mark.parametrize("batch_users", [1, 9, 1000])
@pytest.mark.parametrize("convention", ["lightgcn", "reference"])
def test_popularity_matches_reference(batch_users: int, convention: str) -> None:
    _, _, train, test = random_problem(seed=11)
    ks = (1, 3, 10, 40)
    got = evaluate_popularity(train, test, ks=ks, recall_convention=convention,
                              batch_users=batch_users)  # fmt: skip
    assert_metrics_equal(got, popularity_reference(train, test, ks, convention))


def test_popularity_ranking_ties_by_lower_row() -> None:
    # item counts: [1, 3, 1, 0, 3] -> 1 and 4 (3 each, lower row first), then 0 and 2, then 3
    train = sp.csr_matrix(
        np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]], dtype=np.float32)
    )
    assert popularity_ranking(train).tolist() == [1, 4, 0, 2, 3]


def test_popularity_equals_evaluate_with_rank_scores() -> None:
    _, _, train, test = random_problem(seed=12, m=80, n=50)
    order = popularity_ranking(train)
    score = np.empty(50)
    score[order] = np.arange(50, 0, -1)
    via_embeddings = evaluate(torch.ones(80, 1, dtype=torch.float64),
                              torch.from_numpy(score)[:, None], train, test)  # fmt: skip
    assert_metrics_equal(evaluate_popularity(train, test), via_embeddings)


def test_argument_errors() -> None:
    u, i = torch.zeros(4, 2), torch.zeros(3, 2)
    ok = sp.csr_matrix((4, 3))
    with pytest.raises(ValueError, match=r"train has shape \(4, 4\), expected \(4, 3\)"):
        evaluate(u, i, sp.csr_matrix((4, 4)), ok)
    with pytest.raises(ValueError, match="embedding shapes"):
        evaluate(u, torch.zeros(3, 5), ok, ok)
    with pytest.raises(ValueError, match="ks must be positive"):
        evaluate(u, i, ok, ok, ks=(0, 5))
    with pytest.raises(ValueError, match="unknown recall convention"):
        evaluate_popularity(ok, ok, recall_convention="ndcg")
    with pytest.raises(ValueError, match="batch_users must be >= 1"):
        evaluate(u, i, ok, ok, batch_users=0)


def test_no_test_users_returns_zeros() -> None:
    empty = sp.csr_matrix((3, 4))
    got = evaluate(torch.ones(3, 2), torch.ones(4, 2), empty, empty, ks=(2,))
    assert got == {"recall@2": 0.0, "ndcg@2": 0.0, "n_users": 0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    user_emb, item_emb, train, test = random_problem(seed=21, m=300, n=120)
    u, i = torch.from_numpy(user_emb).float(), torch.from_numpy(item_emb).float()
    cpu = evaluate(u, i, train, test, batch_users=64)
    gpu = evaluate(u.cuda(), i.cuda(), train, test, batch_users=64)
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-5), key
