"""Durable store of ingested interactions (SQLite, WAL); the next retrain trains on a snapshot.

stdlib-only, shared by the service (``POST /interactions`` appends a validated batch in one
transaction: all rows or none) and the worker (``FeedbackStore.snapshot()``: all rows, which
trainer.data.merge_ingested adds to the base dataset in memory). Ids are validated here too,
so nothing unsafe reaches a file.

Every row gets a ``seq`` (AUTOINCREMENT; writers are serialised, so seq order is commit order).
A snapshot reads in one read transaction and records the highest seq it includes: it holds
exactly the rows with ``seq <= max_seq``, and ``rows(after_seq=max_seq)`` are the ones it missed.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from contract.ids import ID_RULE, is_valid_id
from contract.sqlite_store import connect, init_db, read_transaction, write_transaction

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
        if not is_valid_id(value):
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

    def max_seq(self) -> int:
        """The highest row seq so far (0 when empty)."""
        with connect(self.path) as db:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM interactions").fetchone()[0])

    def rows(self, after_seq: int = 0) -> list[tuple[str, str, float]]:
        """(user_id, item_id, timestamp) in ingestion order; only seq > `after_seq` if given."""
        with connect(self.path) as db:
            return [(u, i, t) for _, u, i, t in _rows_after(db, after_seq)]

    def snapshot(self) -> FeedbackSnapshot:
        """Every row, read in one read transaction: a point-in-time view with each committed
        row once, however many batches are ingested meanwhile (those get a larger seq than the
        returned ``max_seq``)."""
        rows: list[tuple[str, str, float]] = []
        max_seq = 0
        with read_transaction(self.path) as db:
            for seq, user, item, ts in _rows_after(db, 0):
                rows.append((user, item, ts))
                max_seq = seq
        return FeedbackSnapshot(rows, max_seq)


def _rows_after(db: sqlite3.Connection, after_seq: int) -> Iterator[tuple[int, str, str, float]]:
    for seq, u, i, t in db.execute(
        "SELECT seq, user_id, item_id, timestamp FROM interactions WHERE seq > ? ORDER BY seq",
        (after_seq,),
    ):
        yield int(seq), u, i, float(t)


@dataclass(frozen=True)
class FeedbackSnapshot:
    """A point-in-time read of the store (``FeedbackStore.snapshot()``)."""

    rows: list[tuple[str, str, float]]
    """(user_id, item_id, timestamp) of every row with seq <= max_seq, in seq order."""
    max_seq: int
    """Highest seq included (0: none); rows ingested later have a larger seq."""


class FeedbackWatcher:
    """A long-lived read connection to the store that says cheaply (one ``PRAGMA
    data_version``, ~3 us) whether any other connection committed since it last asked, so a
    reader can follow the log without querying it per request. Other processes' commits
    count too (several API workers share one file). Thread-safe; never writes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        init_db(self.path, _SCHEMA)
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.Lock()
        self._version: int | None = None

    def changed(self) -> bool:
        """True on the first call and whenever rows may have been committed since the last."""
        with self._lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            changed, self._version = version != self._version, version
            return changed

    def rows_after(self, after_seq: int) -> list[tuple[int, str, str]]:
        """(seq, user_id, item_id) of the rows with seq > `after_seq`, in seq order."""
        with self._lock:
            return [(seq, u, i) for seq, u, i, _ in _rows_after(self._db, after_seq)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
