"""A job's training set: its dataset plus every ingested interaction, merged in memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from contract import layout
from store.feedback import FeedbackSnapshot, FeedbackStore
from store.jobs import Job
from worker.bootstrap import ensure_default_dataset
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from trainer.data import Dataset

log = logging.getLogger("specrec.worker")


def training_set(settings: WorkerSettings, job: Job) -> tuple[Dataset, FeedbackSnapshot]:
    """The job's dataset plus every ingested interaction, in memory, keeping its split.

    The ingested rows are one point-in-time read of the FeedbackStore; the returned snapshot
    says up to which ``seq`` they go (rows ingested later are the next retrain's).
    """
    from trainer.data import load_dataset, merge_ingested

    name = job.params.get("dataset") or settings.dataset
    base = settings.dataset_dir(name)
    if name == layout.DEFAULT_DATASET:
        ensure_default_dataset(settings)
    if not base.exists():
        raise FileNotFoundError(f"dataset {name!r} not found at {base}")
    ds = load_dataset(base)
    snapshot = FeedbackStore(settings.feedback_db).snapshot()
    merged = merge_ingested(ds, snapshot.rows)
    log.info(
        "job %s: %s plus %d ingested interactions (up to seq %d): %d users, %d items, "
        "%d train / %d test pairs",
        job.id,
        ds.name,
        len(snapshot.rows),
        snapshot.max_seq,
        merged.n_users,
        merged.n_items,
        merged.n_train,
        merged.n_test,
    )
    return merged, snapshot
