"""The large synthetic generator: the default's degree distribution and popularity, exact
mixture sampling, a sound holdout, and files that load_dataset reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer import synthetic
from trainer.data import load_dataset
from trainer.synthetic_large import LargeSynthetic, generate_large, holdout, write_lightgcn


@pytest.fixture(scope="module")
def small() -> LargeSynthetic:
    return generate_large(3000, 2000, seed=0)


def test_deterministic_per_seed(small: LargeSynthetic) -> None:
    again = generate_large(3000, 2000, seed=0)
    other = generate_large(3000, 2000, seed=1)
    assert np.array_equal(again.items, small.items) and np.array_equal(again.users, small.users)
    assert not np.array_equal(other.items[:1000], small.items[:1000])


def test_degrees_and_popularity_match_the_default(small: LargeSynthetic) -> None:
    ref = synthetic.generate()  # the default dataset's generator, same parameters
    deg = np.bincount(small.users, minlength=3000)
    assert np.array_equal(deg, small.counts)
    assert deg.min() == 10 and deg.max() == 150 and np.median(deg) == 30
    assert abs(len(small.users) - len(ref.users)) < 0.03 * len(ref.users)
    assert len(np.unique(small.users * 2000 + small.items)) == len(small.users)  # distinct

    def top_decile_share(items: np.ndarray) -> float:
        counts = np.sort(np.bincount(items, minlength=2000))[::-1]
        return counts[:200].sum() / counts.sum()

    assert top_decile_share(ref.items) == pytest.approx(0.39, abs=0.02)
    assert top_decile_share(small.items) == pytest.approx(top_decile_share(ref.items), abs=0.02)


def test_one_cluster_one_item_draws_follow_the_weights() -> None:
    # with one cluster every user's p(j) is w_j / W, so single draws estimate it directly
    data = generate_large(200_000, 50, seed=3, n_clusters=1, min_items=1, max_items=1)
    freq = np.bincount(data.items, minlength=50) / len(data.items)
    expected = data.item_weight / data.item_weight.sum()
    assert np.abs(freq - expected).max() < 4 * np.sqrt(expected.max() / len(data.items))
    assert expected.max() > 0.1 and freq.argmax() == expected.argmax()


def test_users_in_a_cluster_favour_its_items() -> None:
    # near-pure interests (concentration 1e-3): most of a user's items share one cluster
    data = generate_large(500, 3000, seed=4, interest_concentration=1e-3)
    clusters = data.item_cluster[data.items]
    bounds = np.r_[0, np.cumsum(data.counts)]
    top_share = [
        np.bincount(clusters[a:b]).max() / (b - a)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    # affinity 12 x 30 clusters: the favoured cluster holds ~ 361 / 390 of the mass
    assert np.median(top_share) > 0.8


def test_holdout_counts_and_disjoint(small: LargeSynthetic) -> None:
    (tr_u, tr_i), (te_u, te_i) = holdout(small, 0.2, seed=0)
    n_test = np.bincount(te_u, minlength=3000)
    assert np.array_equal(n_test, np.maximum(1, np.rint(0.2 * small.counts)))
    assert len(tr_u) + len(te_u) == len(small.users)
    train_keys, test_keys = set((tr_u * 2000 + tr_i).tolist()), set((te_u * 2000 + te_i).tolist())
    assert not train_keys & test_keys
    assert train_keys | test_keys == set((small.users * 2000 + small.items).tolist())


def test_written_files_load_back(tmp_path: Path) -> None:
    write_lightgcn(tmp_path, 300, 400, seed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.txt", "train.txt"]
    ds = load_dataset(tmp_path)
    data = generate_large(300, 400, seed=2)
    (tr_u, tr_i), (te_u, te_i) = holdout(data, 0.2, seed=2)
    assert ds.n_users == 300 and ds.n_items == data.items.max() + 1
    got = set(zip(ds.train_users.tolist(), ds.train_items.tolist(), strict=True))
    assert got == set(zip(tr_u.tolist(), tr_i.tolist(), strict=True))
    got = set(zip(ds.test_users.tolist(), ds.test_items.tolist(), strict=True))
    assert got == set(zip(te_u.tolist(), te_i.tolist(), strict=True))


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_items >= 2"):
        generate_large(10, 1)
    with pytest.raises(ValueError, match="min_items <= max_items"):
        generate_large(10, 10, min_items=5, max_items=2)
