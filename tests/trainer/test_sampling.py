"""Samplers (distribution, membership, steps per epoch) and the per-batch co-interaction mask."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from trainer.sampling import CSR, PairSampler, UserItemSampler, shared_neighbors

CPU = torch.device("cpu")


def matrix() -> sp.csr_matrix:
    # user 0: 1 item, user 1: 4 items, user 2: none, user 3: 2 items; 6 items
    rows = [0, 1, 1, 1, 1, 3, 3]
    cols = [5, 0, 1, 2, 3, 0, 4]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(4, 6))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_user_item_sampler_users_uniform_items_uniform_within_user():
    r = matrix()
    s = UserItemSampler(CSR(r, CPU), batch_size=2, generator=gen())
    users, items = (t.numpy() for t in s.sample(60_000))
    dense = r.toarray()
    assert (dense[users, items] == 1).all()  # every item is one of the user's training items
    counts = np.bincount(users, minlength=4)
    assert counts[2] == 0  # users without training items are never drawn
    # the three active users uniformly: 20,000 expected each, sd ~ 115
    np.testing.assert_allclose(counts[[0, 1, 3]], 20_000, atol=600)
    # user 1's four items uniformly: ~5,000 each, sd ~ 61
    per_item = np.bincount(items[users == 1], minlength=6)[:4]
    np.testing.assert_allclose(per_item, counts[1] / 4, atol=300)


def test_user_item_sampler_epoch_has_n_train_over_b_steps():
    r = matrix()  # 7 training pairs
    s = UserItemSampler(CSR(r, CPU), batch_size=3, generator=gen())
    assert s.steps_per_epoch == 7 // 3
    batches = list(s.epoch())
    assert len(batches) == 2
    assert all(u.shape == (3,) and i.shape == (3,) for u, i in batches)
    assert all(u.dtype == torch.int64 for u, _ in batches)


def test_sampling_is_reproducible_for_a_seed():
    r = matrix()
    a = UserItemSampler(CSR(r, CPU), batch_size=4, generator=gen(3)).sample(50)
    b = UserItemSampler(CSR(r, CPU), batch_size=4, generator=gen(3)).sample(50)
    c = UserItemSampler(CSR(r, CPU), batch_size=4, generator=gen(4)).sample(50)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_pair_sampler_uniform_over_pairs_with_unseen_negatives():
    r = matrix()
    s = PairSampler(CSR(r, CPU), batch_size=2, generator=gen(), negatives=True)
    users, items, negs = (t.numpy() for t in s.sample(70_000))
    dense = r.toarray()
    assert (dense[users, items] == 1).all()
    assert (dense[users, negs] == 0).all()  # negatives are never training items of the user
    # 7 pairs uniformly: 10,000 each, sd ~ 93
    keys = users * 6 + items
    _, counts = np.unique(keys, return_counts=True)
    assert len(counts) == 7
    np.testing.assert_allclose(counts, 10_000, atol=500)
    # user 1's negatives are uniform over its two unseen items (4 and 5)
    neg1 = np.bincount(negs[users == 1], minlength=6)
    assert neg1[:4].sum() == 0
    np.testing.assert_allclose(neg1[4:], (users == 1).sum() / 2, atol=400)
    assert s.steps_per_epoch == 7 // 2


def test_pair_sampler_without_negatives_yields_pairs():
    s = PairSampler(CSR(matrix(), CPU), batch_size=2, generator=gen(), negatives=False)
    batch = next(s.epoch())
    assert len(batch) == 2


def test_shared_neighbors_equals_dense_numpy():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 50)) < 0.05).astype(np.float32)
    dense[:, 2] = 1  # a column most rows share: a large group
    dense[12, 2] = 0
    dense[7] = 0  # a user with no items shares nothing, not even with itself
    r = sp.csr_matrix(dense)
    rows = np.array([3, 7, 3, 12, 29, 0, 18, 18, 5])  # duplicates included
    got = shared_neighbors(CSR(r, CPU), torch.tensor(rows)).numpy()
    want = (dense[rows] @ dense[rows].T) > 0
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()  # the case is not trivial
    assert not want[1].any()  # row 7 (position 1) has no entries
    # items side: the transpose
    cols = np.array([0, 4, 4, 9, 33, 49])
    got_i = shared_neighbors(CSR(r.T.tocsr(), CPU), torch.tensor(cols)).numpy()
    np.testing.assert_array_equal(got_i, (dense[:, cols].T @ dense[:, cols]) > 0)
