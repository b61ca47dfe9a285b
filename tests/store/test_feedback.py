"""The interaction store: all-or-nothing batches and point-in-time snapshots."""

from __future__ import annotations

import pytest

from store.feedback import FeedbackSnapshot, FeedbackStore, Interaction, row_problem
from tests.postgres import StoreAt


def test_append_all_or_nothing(store_target: StoreAt) -> None:
    store = FeedbackStore(store_target("fb"))
    assert store.append([Interaction("u1", "i1", 10.0), Interaction("u1", "i2")]) == 2
    with pytest.raises(ValueError, match=r"^row 1: item_id 'bad\\x00id' is not a valid id"):
        store.append([Interaction("u2", "i1", 1.0), Interaction("u2", "bad\x00id", 2.0)])
    assert store.count() == 2  # the bad batch left nothing behind
    rows = store.rows()
    assert rows[0] == ("u1", "i1", 10.0)
    assert rows[1][:2] == ("u1", "i2") and rows[1][2] > 1e9  # ingestion time filled in


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (Interaction("", "i"), "user_id '' is not a valid id"),
        (Interaction("u" * 257, "i"), "is not a valid id"),
        (Interaction("u", "i\n"), "item_id 'i\\n' is not a valid id"),
        (Interaction("u", "i", float("nan")), "timestamp nan must be a finite number"),
        (Interaction("u", "i", -1.0), "timestamp -1.0 must be a finite number"),
    ],
)
def test_row_problems(row: Interaction, reason: str) -> None:
    assert reason in (row_problem(row) or "")


def test_snapshot_rows_and_high_water_mark(store_target: StoreAt) -> None:
    """snapshot(): every stored row in seq order, as the store holds it (a missing timestamp is
    the ingestion time, not 0), and the highest seq included; an empty store gives ([], 0)."""
    store = FeedbackStore(store_target("fb"))
    assert store.snapshot() == FeedbackSnapshot([], 0)
    store.append([Interaction("user_0", "item_1", 1.0)])
    with pytest.raises(ValueError):  # a rejected batch adds nothing
        store.append([Interaction("user_9", "item_9", 1.0), Interaction("bad\x00id", "item_9")])
    store.append([Interaction("user_1", "item_2"), Interaction("new_user", "item_3", 5)])
    with store.db.connect() as db:
        ((stored_ts, ingested_at),) = db.execute(
            "SELECT timestamp, ingested_at FROM interactions WHERE user_id = 'user_1'"
        ).fetchall()
    assert stored_ts == ingested_at > 1e9  # None -> ingestion time

    snap = store.snapshot()
    assert snap == FeedbackSnapshot(
        [("user_0", "item_1", 1.0), ("user_1", "item_2", stored_ts), ("new_user", "item_3", 5.0)],
        3,
    )
    assert all(isinstance(ts, float) for _, _, ts in snap.rows)
    assert snap.max_seq == store.max_seq() and store.rows(after_seq=snap.max_seq) == []
