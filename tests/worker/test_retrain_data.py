"""The training set of a retrain: a dataset plus the ingested interactions, merged in memory.

A dataset with its own split (LightGCN train.txt/test.txt, CSV-pair train.csv/test.csv) keeps
it: no published test pair ever becomes a training pair, and the job's metrics and its quality
gate are computed on the original test split (plus the new users' held-out pairs). A single
interactions table is merged and split again, exactly as the former CSV snapshot did.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.artifact import ModelRegistry
from contract.config import TrainConfig, default_synthetic_config
from store.feedback import FeedbackStore, Interaction
from store.jobs import Job, JobStore
from trainer import train as train_module
from trainer.data import DEFAULT_HOLDOUT, Dataset, Holdout, load_dataset, merge_ingested
from trainer.evaluate import evaluate
from trainer.synthetic import write_dataset
from worker import job as worker_job
from worker.job import run_job
from worker.jobconfig import job_train_config
from worker.settings import WorkerSettings

# A LightGCN dataset: users 0..2, items 0..3; each user has two training items and one test
# item. Written as LightGCN text and as CSV pairs, it is the same Dataset.
TRAIN_TXT = "0 0 1\n1 1 2\n2 2 3\n"
TEST_TXT = "0 2\n1 3\n2 0\n"
ORIGINAL_TRAIN = {("0", "0"), ("0", "1"), ("1", "1"), ("1", "2"), ("2", "2"), ("2", "3")}
ORIGINAL_TEST = {("0", "2"), ("1", "3"), ("2", "0")}

# Ingested rows, in seq order: (user_id, item_id, timestamp)
INGESTED: list[tuple[str, str, float]] = [
    ("0", "3", 10.0),  # known user, known item: trains
    ("1", "3", 11.0),  # equals user 1's test pair: dropped (the pair stays held out)
    ("new_a", "1", 12.0),  # a new user with five pairs: the latest one is held out
    ("new_a", "item_x", 13.0),  # ... and a new item
    ("new_a", "2", 14.0),
    ("new_a", "0", 15.0),
    ("new_a", "3", 16.0),
    ("2", "item_x", 17.0),  # known user, new item: trains
    ("new_b", "0", 18.0),  # a new user with one pair: it trains
    ("0", "0", 19.0),  # already a training pair: no change
]
MERGED_USERS = ["0", "1", "2", "new_a", "new_b"]
MERGED_ITEMS = ["0", "1", "2", "3", "item_x"]
# rows: users as MERGED_USERS, columns: items as MERGED_ITEMS
MERGED_TRAIN = np.array(
    [
        [1, 1, 0, 1, 0],  # 0: {0, 1} + ingested 3
        [0, 1, 1, 0, 0],  # 1: {1, 2}; the ingested 3 is its test pair
        [0, 0, 1, 1, 1],  # 2: {2, 3} + ingested item_x
        [1, 1, 1, 0, 1],  # new_a: its first four pairs
        [1, 0, 0, 0, 0],  # new_b: its only pair
    ]
)
MERGED_TEST = np.array(
    [
        [0, 0, 1, 0, 0],  # 0: test 2 as published
        [0, 0, 0, 1, 0],  # 1: test 3 as published
        [1, 0, 0, 0, 0],  # 2: test 0 as published
        [0, 0, 0, 1, 0],  # new_a: its latest pair (3, at t=16)
        [0, 0, 0, 0, 0],
    ]
)


def write_lightgcn(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text(TRAIN_TXT)
    (path / "test.txt").write_text(TEST_TXT)
    return path


def write_csv_pairs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.csv", TRAIN_TXT), ("test.csv", TEST_TXT)):
        lines = ["user,item"]
        for line in text.splitlines():
            user, *items = line.split()
            lines += [f"{user},{item}" for item in items]
        (path / name).write_text("\n".join(lines) + "\n")
    return path


def named_pairs(ds: Dataset, split: str) -> set[tuple[str, str]]:
    users, items = getattr(ds, f"{split}_users"), getattr(ds, f"{split}_items")
    return {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(users, items, strict=True)}


@pytest.fixture(params=["lightgcn", "csv-pair"])
def split_ds(request: pytest.FixtureRequest, tmp_path: Path) -> Dataset:
    write = write_lightgcn if request.param == "lightgcn" else write_csv_pairs
    ds = load_dataset(write(tmp_path / "tiny"))
    assert ds.holdout is None  # the split came with the data
    assert named_pairs(ds, "train") == ORIGINAL_TRAIN
    assert named_pairs(ds, "test") == ORIGINAL_TEST
    return ds


# ----------------------------------------------------------------------------- merge_ingested


def test_split_dataset_keeps_its_split_exact_matrices(split_ds: Dataset) -> None:
    merged = merge_ingested(split_ds, INGESTED)
    assert merged.name == split_ds.name and merged.holdout is None
    assert merged.user_ids.tolist() == MERGED_USERS
    assert merged.item_ids.tolist() == MERGED_ITEMS
    np.testing.assert_array_equal(merged.train_matrix().toarray(), MERGED_TRAIN)
    np.testing.assert_array_equal(merged.test_matrix().toarray(), MERGED_TEST)
    # the original test pairs are all still test pairs, and none is a training pair
    assert ORIGINAL_TEST <= named_pairs(merged, "test")
    assert not ORIGINAL_TEST & named_pairs(merged, "train")
    assert ORIGINAL_TRAIN <= named_pairs(merged, "train")
    # the original rows keep their ids: the old test matrix is the new one's top-left block
    np.testing.assert_array_equal(
        merged.test_matrix()[:3, :4].toarray(), split_ds.test_matrix().toarray()
    )
    # canonical: sorted by (user, item), no duplicates
    keys = merged.train_users * merged.n_items + merged.train_items
    assert np.all(np.diff(keys) > 0)


def test_ingested_test_pair_is_dropped_not_trained(split_ds: Dataset) -> None:
    merged = merge_ingested(split_ds, [("1", "3", 5.0), ("2", "0", 6.0)])  # both test pairs
    assert merged.user_ids.tolist() == split_ds.user_ids.tolist()
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            getattr(merged, f"{split}_matrix")().toarray(),
            getattr(split_ds, f"{split}_matrix")().toarray(),
        )
    assert merged.fingerprint() == split_ds.fingerprint()


def test_new_users_get_the_loaders_holdout(split_ds: Dataset) -> None:
    # ten pairs: round(0.2 * 10) = 2 latest to test, like an interactions table's holdout
    rows = [("fresh", str(k % 4) if k < 4 else f"n{k}", float(100 - k)) for k in range(10)]
    merged = merge_ingested(split_ds, rows)
    assert DEFAULT_HOLDOUT == Holdout(0.2, 0)
    fresh = merged.user_ids.tolist().index("fresh")
    test_items = {merged.item_ids[i] for i in merged.test_items[merged.test_users == fresh]}
    assert test_items == {"0", "1"}  # timestamps 100 and 99: the latest two, ingested first
    assert (merged.train_users == fresh).sum() == 8
    assert merged.item_ids.tolist() == ["0", "1", "2", "3"] + [f"n{k}" for k in range(4, 10)]


def test_no_rows_is_the_dataset_itself(split_ds: Dataset) -> None:
    assert merge_ingested(split_ds, []) is split_ds


def _csv_snapshot_path(ds: Dataset, rows: list[tuple[str, str, float]], out: Path) -> Dataset:
    """What the worker used to do: base pairs (train, then test; timestamp 0) plus the
    ingested rows written to one interactions table, loaded back (and split) again."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp"])
        for users, items in ((ds.train_users, ds.train_items), (ds.test_users, ds.test_items)):
            for u, i in zip(users.tolist(), items.tolist(), strict=True):
                w.writerow([ds.user_ids[u], ds.item_ids[i], 0])
        w.writerows(rows)
    return load_dataset(out)


def test_interactions_table_is_merged_and_split_as_before(tmp_path: Path) -> None:
    """The synthetic default (one table, no split of its own): id maps, pairs and split are
    bit-for-bit those of the former CSV snapshot, so the default's results do not change."""
    ds = load_dataset(write_dataset(tmp_path / "default", n_users=60, n_items=40))
    assert ds.holdout == DEFAULT_HOLDOUT
    rows = [
        ("user_3", "item_7", 1.9e9),  # known user, known item
        ("user_3", "item_new", 1.9e9 + 1),  # new item
        ("user_5", ds.item_ids[ds.test_items[ds.test_users == 5][0]], 1.9e9 + 2),  # test pair
        *[("someone_new", f"item_{k}", 1.9e9 + 10 + k) for k in range(6)],
        ("user_3", "item_7", 1.9e9 + 50),  # a duplicate, later
    ]
    merged = merge_ingested(ds, rows)
    before = _csv_snapshot_path(ds, rows, tmp_path / "snapshot" / "interactions.csv")
    assert merged.fingerprint() == before.fingerprint()
    for name in ("user_ids", "item_ids", "train_users", "train_items", "test_users", "test_items"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(before, name))
    assert merged.name == ds.name and merged.holdout == ds.holdout


@settings(max_examples=60, deadline=None)
@given(
    train=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=1, max_size=25),
    test=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), max_size=10),
    rows=st.lists(
        st.tuples(
            st.sampled_from(["0", "1", "2", "3", "4", "5", "u_a", "u_b"]),
            st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "i_a", "i_b"]),
            st.integers(0, 5).map(float),
        ),
        max_size=30,
    ),
)
def test_split_is_kept_for_any_rows(train: list, test: list, rows: list) -> None:
    """Invariants: old ids keep their rows; every old pair stays where it was; an ingested
    row of a known user trains unless it is a test pair; a new user's rows all land in train
    or test; nothing else appears."""
    m, n = 6, 7
    ds = Dataset.from_pairs(
        "p",
        np.arange(m).astype(str),
        np.arange(n).astype(str),
        (np.array([u for u, _ in train]), np.array([i for _, i in train])),
        (np.array([u for u, _ in test], dtype=np.int64), np.array([i for _, i in test])),
    )
    merged = merge_ingested(ds, rows)
    assert merged.user_ids[:m].tolist() == ds.user_ids.tolist()
    assert merged.item_ids[:n].tolist() == ds.item_ids.tolist()
    old_train, old_test = named_pairs(ds, "train"), named_pairs(ds, "test")
    new_train, new_test = named_pairs(merged, "train"), named_pairs(merged, "test")
    known = set(ds.user_ids.tolist())
    ingested_known = {(u, i) for u, i, _ in rows if u in known}
    ingested_new = {(u, i) for u, i, _ in rows if u not in known}
    assert new_test == old_test | (new_test & ingested_new)
    assert new_train == old_train | (ingested_known - old_test) | (new_train & ingested_new)
    assert (new_train | new_test) & ingested_new == ingested_new
    assert not (new_train & new_test) - (old_train & old_test)  # no new overlap


# ----------------------------------------------------------------------------- the worker


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("SPECREC_"):
            monkeypatch.delenv(name)
    write_lightgcn(tmp_path / "data" / "tiny")
    return tmp_path


def quick_config(**overrides: Any) -> TrainConfig:
    return default_synthetic_config(**({"dim": 8, "epochs": 3, "ks": (1, 20)} | overrides))


def test_retrain_on_a_split_dataset_is_evaluated_on_its_test_split(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_job in-process on the LightGCN dataset plus ingested rows, publishing the
    evaluation run (no refit): the gate and the published metrics use a test set holding every
    original test pair, none of which is among the model's training pairs; the published seen
    set holds them all the same."""
    settings = WorkerSettings(home=home, heartbeat_interval_s=0.2, index_recall=0.8)
    FeedbackStore(settings.feedback_db).append([Interaction(u, i, t) for u, i, t in INGESTED])
    gated: list[Dataset] = []
    real_decide = worker_job.decide

    def spy_decide(ds: Dataset, *args: Any, **kwargs: Any) -> Any:
        gated.append(ds)
        return real_decide(ds, *args, **kwargs)

    monkeypatch.setattr(worker_job, "decide", spy_decide)
    store = JobStore(settings.jobs_db)
    cfg = quick_config()
    params = {
        "dataset": "tiny",
        "force": True,
        "train_config": cfg.to_dict() | {"device": None},
        "refit": False,
    }
    job, _ = store.enqueue(params)
    run_job(settings, store, store.claim("w"), "w")
    job = store.get(job.id)
    assert job.state == "succeeded", job.error
    assert job.result["ingested"] == {"rows": len(INGESTED), "max_seq": len(INGESTED)}

    # the gate scored both models on the original split (plus new_a's held-out pair)
    (ds,) = gated
    assert named_pairs(ds, "test") == ORIGINAL_TEST | {("new_a", "3")}
    assert not ORIGINAL_TEST & named_pairs(ds, "train")
    np.testing.assert_array_equal(ds.test_matrix().toarray(), MERGED_TEST)
    np.testing.assert_array_equal(ds.train_matrix().toarray(), MERGED_TRAIN)
    assert job.result["gate"]["n_compared_users"] == 4  # 0, 1, 2 and new_a have test pairs

    # the published model was trained on, and its metrics computed against, that split
    model = ModelRegistry(settings.registry_root).load()
    assert model.version == job.result["model_version"]
    manifest = model.manifest
    assert manifest.dataset == "tiny"
    # the worker's recall target reached the index choice (a tiny catalogue: exact search)
    assert manifest.index is not None and (manifest.index.kind, manifest.index.target) == (
        "flat",
        0.8,
    )
    assert manifest.ingested.to_dict() == {"rows": len(INGESTED), "max_seq": len(INGESTED)}
    assert manifest.dataset_fingerprint == ds.fingerprint()
    arrays = model.arrays
    assert arrays.user_ids.tolist() == MERGED_USERS
    assert arrays.item_ids.tolist() == MERGED_ITEMS
    assert manifest.to_dict()["trained_on"] == {
        "pairs": "train",
        "n_pairs": ds.n_train,
        "epochs": 3,
        "evaluated_on": {"train_pairs": ds.n_train, "test_pairs": ds.n_test},
    }
    assert job.result["trained_on"] == manifest.to_dict()["trained_on"]
    # seen: every known pair, the held-out ones too (the service never recommends them)
    assert published_seen(arrays) == named_pairs(ds, "train") | named_pairs(ds, "test")
    assert ORIGINAL_TEST <= published_seen(arrays)
    expected_test = sp.csr_matrix(MERGED_TEST.astype(np.float32))
    recomputed = evaluate(
        torch.from_numpy(arrays.user_emb.astype(np.float32)),
        torch.from_numpy(arrays.item_emb.astype(np.float32)),
        sp.csr_matrix(MERGED_TRAIN.astype(np.float32)),
        expected_test,
        ks=cfg.ks,
        recall_convention=cfg.recall_convention,
    )
    assert manifest.metrics == pytest.approx(recomputed)
    assert job.result["metrics"] == pytest.approx(recomputed)
    assert manifest.metrics["n_users"] == 4
    # the stored config ran as stored (dim 8, 3 epochs), and nothing was written per job
    assert manifest.config.to_dict() == cfg.to_dict()
    assert arrays.dim == 8 and manifest.training.epochs_run == 3
    assert not (home / "snapshots").exists()


def published_seen(arrays: Any) -> set[tuple[str, str]]:
    """The (user id, item id) pairs of a published model's seen set."""
    return {
        (str(arrays.user_ids[u]), str(arrays.item_ids[i]))
        for u in range(arrays.n_users)
        for i in arrays.seen(u).tolist()
    }


def test_retrain_publishes_a_refit_on_every_pair_with_the_splits_metrics(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (refit): the job's evaluation run is gated and its metrics published, and
    the published embeddings are a refit on train and test (seen: every pair)."""
    settings = WorkerSettings(home=home, heartbeat_interval_s=0.2)
    FeedbackStore(settings.feedback_db).append([Interaction(u, i, t) for u, i, t in INGESTED])
    store = JobStore(settings.jobs_db)
    cfg = quick_config()
    runs: list[tuple[int, int]] = []
    real_fit = train_module.fit

    def spy_fit(ds: Dataset, c: TrainConfig, **kwargs: Any) -> Any:
        runs.append((ds.n_train, ds.n_test))
        return real_fit(ds, c, **kwargs)

    monkeypatch.setattr(train_module, "fit", spy_fit)
    results = []
    for refit in (False, None):  # the evaluation alone, then the default
        params = {"dataset": "tiny", "force": True, "train_config": cfg.to_dict()}
        job, _ = store.enqueue(params | ({} if refit is None else {"refit": refit}))
        run_job(settings, store, store.claim("w"), "w")
        job = store.get(job.id)
        assert job.state == "succeeded", job.error
        results.append((job, ModelRegistry(settings.registry_root).load()))
    (_, alone), (job, model) = results
    n_train, n_test = alone.manifest.to_dict()["trained_on"]["evaluated_on"].values()
    assert runs == [(n_train, n_test), (n_train, n_test), (n_train + n_test, 0)]
    assert model.manifest.to_dict()["trained_on"] == {
        "pairs": "all",
        "n_pairs": n_train + n_test,
        "epochs": 3,
        "evaluated_on": {"train_pairs": n_train, "test_pairs": n_test},
    }
    # the split run's metrics (CPU runs are reproducible: the same as the run published alone)
    assert model.manifest.to_dict()["metrics"] == alone.manifest.to_dict()["metrics"]
    assert job.result["metrics"] == alone.manifest.to_dict()["metrics"]
    assert model.manifest.to_dict()["metrics"]["n_users"] == 4
    # the gate compared with the serving model (fitted on train only) on the split
    assert job.result["gate"]["serving_basis"] == "split"
    assert job.result["gate"]["serving_value"] == pytest.approx(
        alone.manifest.to_dict()["metrics"]["recall@20"]
    )
    # the collapse check read the published (refit) embeddings' spectrum
    ratio = model.manifest.to_dict()["spectrum"]["all"]["normalized"]["effective_rank_ratio"]
    assert job.result["gate"]["erank_ratio"] == ratio
    assert not np.array_equal(model.arrays.user_emb, alone.arrays.user_emb)
    assert published_seen(model.arrays) == published_seen(alone.arrays)
    assert ORIGINAL_TEST <= published_seen(model.arrays)


def test_spectrum_is_computed_once_per_trained_model(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fit computes the spectrum of the returned embeddings once; the gate and the manifest
    use that one (the gate's erank ratio is the manifest's)."""
    import contract.spectrum

    svds: list[int] = []
    real = contract.spectrum.singular_values

    def counting(x: np.ndarray, normalize_rows: bool = False) -> np.ndarray:
        svds.append(1)
        return real(x, normalize_rows)

    monkeypatch.setattr(contract.spectrum, "singular_values", counting)
    settings = WorkerSettings(home=home, heartbeat_interval_s=0.2)
    store = JobStore(settings.jobs_db)
    cfg = quick_config(eval_every=10)  # one evaluation: the last epoch's
    params = {"dataset": "tiny", "force": True, "train_config": cfg.to_dict(), "refit": False}
    job, _ = store.enqueue(params)  # one run (a refit computes its own, once)
    run_job(settings, store, store.claim("w"), "w")
    job = store.get(job.id)
    assert job.state == "succeeded", job.error
    assert len(svds) == 6  # one embedding_spectrum: users, items, all; raw and normalised
    manifest = ModelRegistry(settings.registry_root).load().manifest
    ratio = manifest.spectrum.all.normalized.effective_rank_ratio
    assert job.result["gate"]["erank_ratio"] == ratio
    summary = manifest.training.history[-1]["spectrum"]
    assert summary["all"]["normalized"]["effective_rank"] == pytest.approx(
        manifest.spectrum.all.normalized.effective_rank
    )


def _claimed(store: JobStore, params: dict[str, Any]) -> Job:
    store.enqueue(params)
    return store.claim("w")


def test_job_train_config_runs_the_stored_config_on_the_workers_device(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    stored = quick_config(lr=123.0).to_dict()
    assert stored["device"] is None
    job = _claimed(store, {"epochs": 99, "train_config": stored})
    assert job_train_config(job, "cpu") == quick_config(lr=123.0, device="cpu")  # not epochs 99
    assert job_train_config(job, None) == quick_config(lr=123.0)
    store.finish(job.id, "w", "succeeded", result={})
    # a job queued without a stored config: derived from its parameters, as the API does
    job = _claimed(store, {"epochs": 7, "hyperparameters": {"dim": 16}})
    assert job_train_config(job, "cpu") == default_synthetic_config(epochs=7, dim=16, device="cpu")
