"""Durable store of ingested interactions (SQLite, WAL); the next retrain trains on a snapshot.

stdlib-only, shared by the service (``POST /interactions`` appends a validated batch in one
transaction: all rows or none) and the worker (snapshots the store into a CSV together with the
base dataset). Ids are validated here too, so nothing unsafe reaches a CSV file.
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trainer.sqlite_store import connect, init_db, write_transaction

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
ID_RULE = "1-128 characters from A-Z a-z 0-9 _ . : @ -"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    timestamp   REAL NOT NULL,
    ingested_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    timestamp: float | None = None  # unix seconds; None -> ingestion time


def row_problem(row: Interaction) -> str | None:
    """Why this row is unacceptable, or None."""
    for field in ("user_id", "item_id"):
        value = getattr(row, field)
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            return f"{field} {value!r} is not a valid id ({ID_RULE})"
    ts = row.timestamp
    if ts is not None and (not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0):
        return f"timestamp {ts!r} must be a finite number of unix seconds >= 0"
    return None


class FeedbackStore:
    """Append-only interaction log at `path`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        init_db(self.path, _SCHEMA)

    def append(self, rows: list[Interaction]) -> int:
        """Validate every row, then insert all in one transaction; returns the new total.

        Raises ValueError("row N: reason") for the first bad row; nothing is written then.
        """
        for i, row in enumerate(rows):
            problem = row_problem(row)
            if problem:
                raise ValueError(f"row {i}: {problem}")
        now = time.time()
        with write_transaction(self.path) as db:
            db.executemany(
                "INSERT INTO interactions (user_id, item_id, timestamp, ingested_at) "
                "VALUES (?, ?, ?, ?)",
                [
                    (r.user_id, r.item_id, now if r.timestamp is None else r.timestamp, now)
                    for r in rows
                ],
            )
            return int(db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])

    def count(self) -> int:
        with connect(self.path) as db:
            return int(db.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])

    def rows(self) -> list[tuple[str, str, float]]:
        """All (user_id, item_id, timestamp) in ingestion order."""
        with connect(self.path) as db:
            return [
                (u, i, float(t))
                for u, i, t in db.execute(
                    "SELECT user_id, item_id, timestamp FROM interactions ORDER BY seq"
                )
            ]


def write_snapshot(
    out_csv: Path,
    base_rows: Iterable[tuple[str, str, float | None]],
    feedback: FeedbackStore | None,
) -> int:
    """Write base rows + all feedback rows as one interactions table; returns the row count.

    Written to a temporary file and renamed, so a reader never sees a partial snapshot.
    Rows without a timestamp get 0 (oldest), so holdouts pick ingested rows as "latest".
    """
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_suffix(".csv.tmp")
    n = 0
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for user, item, ts in base_rows:
            writer.writerow([user, item, 0 if ts is None else ts])
            n += 1
        for user, item, ts in feedback.rows() if feedback else []:
            writer.writerow([user, item, ts])
            n += 1
    tmp.replace(out_csv)
    return n
