"""POST /interactions batches racing the retrain snapshot: counted row by row, every accepted
row is in the snapshot taken after its acknowledgement, each snapshot is a point-in-time prefix
of the store (no row twice, none skipped, batches whole), and what one snapshot missed is
exactly what the next one adds after its high-water mark."""

from __future__ import annotations

import csv
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pytest
from fastapi.testclient import TestClient

from contract.feedback import FeedbackStore, Interaction, SnapshotInfo, write_snapshot
from service.app import create_app
from service.settings import Settings

TOKEN = "race-test-admin-token-0123456789"
BASE = [("user_0", "item_1", 1.0), ("user_1", "item_2", None), ("user_2", "item_1", 3.0)]
THREADS, BATCHES, ROWS = 4, 30, 7
CSV_WRITER = csv.writer


@dataclass
class Batch:
    keys: list[str]
    acked_at: float  # time.monotonic() when the 200 arrived


@dataclass
class Snap:
    started_at: float
    info: SnapshotInfo
    keys: list[str]  # feedback rows' user ids, in CSV order


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in list(os.environ):
        if name.upper().startswith("SPECREC_") or name.upper() in ("ADMIN_TOKEN", "PORT", "HOST"):
            monkeypatch.delenv(name)
    with TestClient(create_app(Settings(home=tmp_path, admin_token=TOKEN))) as c:
        yield c


def _post_batches(client: TestClient, thread: int, out: list[Batch]) -> None:
    for b in range(BATCHES):
        keys = [f"t{thread}b{b}r{r}" for r in range(ROWS)]
        body = {
            "interactions": [{"user_id": k, "item_id": f"item_{r}"} for r, k in enumerate(keys)]
        }
        resp = client.post("/interactions", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == ROWS
        out.append(Batch(keys, time.monotonic()))


def _snapshot(store: FeedbackStore, out: Path) -> Snap:
    started = time.monotonic()
    info = write_snapshot(out, BASE, store)
    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["user_id", "item_id", "timestamp"]
    assert rows[1:4] == [
        ["user_0", "item_1", "1.0"],
        ["user_1", "item_2", "0"],
        ["user_2", "item_1", "3.0"],
    ]
    assert info.rows == len(rows) - 1 and info.base_rows == len(BASE)
    keys = [r[0] for r in rows[4:]]
    assert info.feedback_rows == len(keys)
    return Snap(started, info, keys)


def _seq_of(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        return {u: s for s, u in db.execute("SELECT seq, user_id FROM interactions")}


def test_snapshots_racing_http_ingestion(client: TestClient, tmp_path: Path) -> None:
    settings: Settings = client.app.state.ctx.settings
    store = FeedbackStore(settings.feedback_db)
    batches: list[Batch] = []
    writers = [
        threading.Thread(target=_post_batches, args=(client, t, batches)) for t in range(THREADS)
    ]
    for w in writers:
        w.start()
    snaps: list[Snap] = []
    while any(w.is_alive() for w in writers):
        snaps.append(_snapshot(store, tmp_path / "snap" / f"{len(snaps)}.csv"))
    for w in writers:
        w.join()
    snaps.append(_snapshot(store, tmp_path / "snap" / "final.csv"))  # the next retrain's

    total = THREADS * BATCHES * ROWS
    accepted = [k for b in batches for k in b.keys]
    assert len(batches) == THREADS * BATCHES and len(set(accepted)) == total
    seq = _seq_of(settings.feedback_db)
    assert len(seq) == store.count() == total and set(seq) == set(accepted)  # none lost
    by_seq = sorted(seq, key=seq.__getitem__)
    mid = [s for s in snaps if 0 < s.info.feedback_rows < total]
    assert mid, "no snapshot was taken while batches were still arriving"

    prev = SnapshotInfo(0, 0, 0, 0)
    prev_keys: set[str] = set()
    for s in snaps:
        # a point-in-time prefix: exactly the rows up to its high-water mark, each once
        assert s.keys == [k for k in by_seq if seq[k] <= s.info.max_seq]
        # every row acknowledged before the snapshot began is in it
        present = set(s.keys)
        for b in batches:
            inside = [k in present for k in b.keys]
            assert all(inside) or not any(inside), "a batch split across snapshots"
            if b.acked_at < s.started_at:
                assert all(inside)
        # what the previous snapshot missed is what this one adds, after the previous mark
        assert s.info.max_seq >= prev.max_seq and prev_keys <= present
        added = [k for k in s.keys if k not in prev_keys]
        assert added == [k for k in by_seq if prev.max_seq < seq[k] <= s.info.max_seq]
        prev, prev_keys = s.info, present
    final = snaps[-1]
    assert final.info.feedback_rows == total and sorted(final.keys) == sorted(accepted)
    assert final.info.max_seq == store.max_seq() and store.rows(after_seq=final.info.max_seq) == []


class _InterleavingWriter:
    """csv.writer stand-in: after the snapshot wrote `trigger`, another batch commits."""

    def __init__(self, f: TextIO, store: FeedbackStore, trigger: str) -> None:
        self.inner, self.store, self.trigger = CSV_WRITER(f), store, trigger
        self.written: list[str] = []

    def writerow(self, row: list[object]) -> None:
        self.inner.writerow(row)
        self.written.append(str(row[0]))
        if row[0] == self.trigger:
            self.store.append([Interaction("late_0", "item_9", 9.0)])


def test_snapshot_is_one_read_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch committed while the snapshot is being written (after its second row) belongs to
    the next snapshot, not this one: the store is read at one point in time."""
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.append([Interaction(f"old_{i}", "item_0", float(i)) for i in range(5)])
    writers: list[_InterleavingWriter] = []

    def make_writer(f: TextIO) -> _InterleavingWriter:
        writers.append(_InterleavingWriter(f, store, trigger="old_1"))
        return writers[-1]

    monkeypatch.setattr(csv, "writer", make_writer)
    info = write_snapshot(tmp_path / "s.csv", [], store)
    monkeypatch.undo()
    assert writers[0].written == ["user_id"] + [f"old_{i}" for i in range(5)]
    assert info == SnapshotInfo(rows=5, base_rows=0, feedback_rows=5, max_seq=5)
    assert store.count() == 6  # the late batch did commit meanwhile
    assert store.rows(after_seq=info.max_seq) == [("late_0", "item_9", 9.0)]
    nxt = write_snapshot(tmp_path / "s2.csv", [], store)
    assert (nxt.feedback_rows, nxt.max_seq) == (6, 6)


def test_concurrent_appends_are_whole_and_counted(tmp_path: Path) -> None:
    """FeedbackStore.append from several threads: every returned total is distinct, the last
    equals the row count, and no batch is interleaved with another in seq order."""
    store = FeedbackStore(tmp_path / "fb.sqlite")
    totals: list[int] = []

    def worker(t: int) -> None:
        for b in range(20):
            rows = [Interaction(f"t{t}b{b}r{r}", "item_0", 1.0) for r in range(5)]
            totals.append(FeedbackStore(store.path).append(rows))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(totals) == list(range(5, 401, 5))  # each batch committed alone
    users = [u for u, _, _ in store.rows()]
    assert len(users) == len(set(users)) == 400
    for start in range(0, 400, 5):  # batches are contiguous in seq order
        assert len({u.rsplit("r", 1)[0] for u in users[start : start + 5]}) == 1
