"""The interaction store: all-or-nothing batches and CSV snapshots."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from contract.feedback import FeedbackStore, Interaction, row_problem, write_snapshot


def test_append_all_or_nothing(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite")
    assert store.append([Interaction("u1", "i1", 10.0), Interaction("u1", "i2")]) == 2
    with pytest.raises(ValueError, match=r"^row 1: item_id 'bad,id' is not a valid id"):
        store.append([Interaction("u2", "i1", 1.0), Interaction("u2", "bad,id", 2.0)])
    assert store.count() == 2  # the bad batch left nothing behind
    rows = store.rows()
    assert rows[0] == ("u1", "i1", 10.0)
    assert rows[1][:2] == ("u1", "i2") and rows[1][2] > 1e9  # ingestion time filled in


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (Interaction("", "i"), "user_id '' is not a valid id"),
        (Interaction("u" * 129, "i"), "is not a valid id"),
        (Interaction("u", "i\n"), "item_id 'i\\n' is not a valid id"),
        (Interaction("u", "i", float("nan")), "timestamp nan must be a finite number"),
        (Interaction("u", "i", -1.0), "timestamp -1.0 must be a finite number"),
    ],
)
def test_row_problems(row: Interaction, reason: str) -> None:
    assert reason in (row_problem(row) or "")


def test_snapshot_merges_base_and_feedback(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.append([Interaction("new_user", "item_3", 5.0)])
    out = tmp_path / "snap" / "interactions.csv"
    info = write_snapshot(out, [("user_0", "item_1", 1.0), ("user_1", "item_2", None)], store)
    assert (info.rows, info.base_rows, info.feedback_rows, info.max_seq) == (3, 2, 1, 1)
    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["user_id", "item_id", "timestamp"],
        ["user_0", "item_1", "1.0"],
        ["user_1", "item_2", "0"],
        ["new_user", "item_3", "5.0"],
    ]
    assert not out.with_suffix(".csv.tmp").exists()
