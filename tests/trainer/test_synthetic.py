"""The synthetic default dataset: deterministic bytes, realistic stats, learnable structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from trainer import synthetic
from trainer.data import load_dataset, read_interactions_table
from trainer.evaluate import evaluate, evaluate_popularity


@pytest.fixture(scope="module")
def default_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_dataset(tmp_path_factory.mktemp("default"))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, default_csv: Path) -> None:
    again = synthetic.write_dataset(tmp_path / "a")
    assert again.read_bytes() == default_csv.read_bytes()
    small = [synthetic.write_dataset(tmp_path / f"s{s}", n_users=40, n_items=30, seed=s)
             for s in (1, 1, 2)]  # fmt: skip
    assert small[0].read_bytes() == small[1].read_bytes() != small[2].read_bytes()


def test_write_is_idempotent_unless_forced(tmp_path: Path) -> None:
    path = synthetic.write_dataset(tmp_path, n_users=20, n_items=15)
    path.write_text("user_id,item_id\nkeep,me\n")
    assert synthetic.write_dataset(tmp_path, n_users=20, n_items=15) == path
    assert path.read_text() == "user_id,item_id\nkeep,me\n"  # untouched without force
    synthetic.write_dataset(tmp_path, n_users=20, n_items=15, force=True)
    assert path.read_text().startswith("user_id,item_id,timestamp\nuser_0,item_")
    assert [p.name for p in tmp_path.iterdir()] == ["interactions.csv"]  # no temp file left


def test_default_stats(default_csv: Path) -> None:
    users, items, ts = read_interactions_table(default_csv)
    assert ts is not None
    u = np.char.replace(users, "user_", "").astype(np.int64)
    i = np.char.replace(items, "item_", "").astype(np.int64)
    assert 100_000 <= len(u) <= 150_000
    assert set(np.unique(u).tolist()) == set(range(3000)) and i.min() >= 0 and i.max() < 2000
    assert len(np.unique(u * 2000 + i)) == len(u)  # no duplicate pairs
    per_user = np.bincount(u, minlength=3000)
    assert per_user.min() == 10 and per_user.max() == 150  # clipped log-normal activity
    assert per_user.std() > 10  # activity varies
    assert (np.diff(u) >= 0).all()  # grouped by user ...
    same_user = np.diff(u) == 0
    assert (np.diff(ts)[same_user] > 0).all()  # ... with strictly increasing timestamps
    # power law: the top 10 % of items hold far more than the 10 % a uniform catalogue gives
    counts = np.sort(np.bincount(i, minlength=2000))[::-1]
    assert counts[:200].sum() / counts.sum() > 0.3
    assert counts[0] > 20 * np.median(counts)


def test_planted_clusters_dominate() -> None:
    data = synthetic.generate()
    interest = data.user_interest[data.users, data.item_cluster[data.items]]  # (nnz,)
    # users interact mostly inside clusters they care about (interest >= 0.1), far above the
    # share of the catalogue those clusters cover
    coverage = (data.user_interest >= 0.1)[:, data.item_cluster].mean()
    assert (interest >= 0.1).mean() > 0.6 > 3 * coverage


def test_collaborative_model_beats_popularity(default_csv: Path) -> None:
    ds = load_dataset(default_csv)  # timestamp holdout: each user's latest 20 % to test
    assert ds.user_ids[:3].tolist() == ["user_0", "user_1", "user_2"]
    train, test = ds.train_matrix(), ds.test_matrix()
    pop = evaluate_popularity(train, test, ks=(20,))["recall@20"]
    u, s, vt = sla.svds(train.astype(np.float64), k=32, random_state=0)  # rank-32 PureSVD
    svd = evaluate(torch.from_numpy(u * s), torch.from_numpy(vt.T.copy()), train, test, ks=(20,))
    assert pop > 0.05  # popularity is a real baseline, not a strawman ...
    assert svd["recall@20"] > 1.5 * pop  # ... that the planted structure lets a model beat


def test_main_writes_and_keeps(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPECREC_HOME", str(tmp_path / "home"))
    assert synthetic.main(["--users", "30", "--items", "25", "--seed", "3"]) == 0
    path = tmp_path / "home" / "data" / "default" / "interactions.csv"
    assert capsys.readouterr().out == f"wrote {path} (30 users, 25 items, seed 3)\n"
    expected = synthetic.to_csv(synthetic.generate(30, 25, 3))
    assert path.read_text() == expected
    assert synthetic.main(["--users", "99"]) == 0
    assert "exists; kept it" in capsys.readouterr().out and path.read_text() == expected
    out = tmp_path / "other"
    assert synthetic.main(["--out", str(out), "--users", "5", "--items", "3", "--force"]) == 0
    assert (out / "interactions.csv").read_text().count("\n") == 1 + 5 * 3  # every user: 3 items
    assert synthetic.main(["--out", str(tmp_path / "bad"), "--users", "0"]) == 2
    assert "need n_users >= 1" in capsys.readouterr().err
