"""An embedding model's per-user top lists (trainer.toplists) against a numpy reference:
argsort of U V^T (float64) with every seen item masked, ties by the lower item row."""

from __future__ import annotations

import numpy as np

from contract.artifact import ModelArrays
from trainer.toplists import embedding_lists, with_embedding_lists


def arrays(user_emb: np.ndarray, item_emb: np.ndarray, seen: list[list[int]]) -> ModelArrays:
    users = np.asarray([u for u, s in enumerate(seen) for _ in s], dtype=np.int64)
    items = np.asarray([i for s in seen for i in s], dtype=np.int64)
    return ModelArrays.build(
        user_emb.astype(np.float32),
        item_emb.astype(np.float32),
        [f"u{u}" for u in range(len(user_emb))],
        [f"i{i}" for i in range(len(item_emb))],
        (users, items),
    )


def reference(a: ModelArrays, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, L) rows and scores, -1 / -inf where a user has fewer than L unseen items."""
    scores = a.user_emb.astype(np.float64) @ a.item_emb.astype(np.float64).T
    m, n = scores.shape
    length = min(length, n)
    rows = np.full((m, length), -1, dtype=np.int64)
    out = np.full((m, length), -np.inf)
    for u in range(m):
        s = scores[u].copy()
        s[a.seen(u)] = -np.inf
        order = [r for r in np.lexsort((np.arange(n), -s)) if np.isfinite(s[r])][:length]
        rows[u, : len(order)] = order
        out[u, : len(order)] = s[order]
    return rows, out


def random_model(seed: int, ties: bool) -> ModelArrays:
    rng = np.random.default_rng(seed)
    m, n = 37, 90
    if ties:  # small integers: float32 scores are exact and many items tie
        users, items = rng.integers(-2, 3, (m, 4)), rng.integers(-2, 3, (n, 4))
    else:
        users, items = rng.standard_normal((m, 8)), rng.standard_normal((n, 8))
    seen = [sorted(rng.choice(n, size=int(rng.integers(0, 12)), replace=False)) for _ in range(m)]
    seen[3] = list(range(n - 5))  # 5 unseen items: a list padded past them
    return arrays(users, items, [[int(i) for i in s] for s in seen])


def test_lists_are_the_exact_top_unseen_items_with_ties_by_lower_row():
    for seed, ties in ((0, False), (1, True), (2, True)):
        a = random_model(seed, ties)
        rows, scores = embedding_lists(a, 20, batch_users=8)  # batches across user rows
        want_rows, want_scores = reference(a, 20)
        assert rows.dtype == np.int32 and scores.dtype == np.float32
        assert rows.shape == (37, 20) == scores.shape
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        assert (rows[3, 5:] == -1).all() and np.isneginf(scores[3, 5:]).all()
        assert sorted(rows[3, :5].tolist()) == list(range(85, 90))
        if ties:  # the test is about ties at the cut: an item left out scores like the 20th
            full = reference(a, 90)[1]
            assert (full[:, 20] == full[:, 19]).sum() > 5


def test_lists_are_as_long_as_the_catalogue_allows():
    a = random_model(0, False)
    rows, _ = embedding_lists(a, 500)
    assert rows.shape == (37, 90)
    np.testing.assert_array_equal(rows, reference(a, 500)[0])


def test_lists_are_written_up_to_the_size_limit_only():
    a = random_model(0, False)
    added = with_embedding_lists(a, 10, max_cells=37 * 90)
    assert added.top_rows is not None and added.top_scores is not None
    np.testing.assert_array_equal(added.top_rows, reference(a, 10)[0])
    added.validate()
    skipped = with_embedding_lists(a, 10, max_cells=37 * 90 - 1)
    assert skipped.top_rows is None and skipped.top_scores is None
