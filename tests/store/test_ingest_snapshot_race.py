"""POST /interactions batches racing the retrain snapshot: counted row by row, every accepted
row is in the snapshot taken after its acknowledgement, each snapshot is a point-in-time prefix
of the store (no row twice, none skipped, batches whole), and what one snapshot missed is
exactly what the next one adds after its high-water mark."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from store import feedback as feedback_module
from store.db import Connection
from store.feedback import FeedbackSnapshot, FeedbackStore, Interaction
from tests.postgres import StoreAt

TOKEN = "race-test-admin-token-0123456789"
THREADS, BATCHES, ROWS = 4, 30, 7
StoredRow = tuple[int, str, str, float]  # (seq, user_id, item_id, timestamp)


@dataclass
class Batch:
    keys: list[str]
    acked_at: float  # time.monotonic() when the 200 arrived


@dataclass
class Snap:
    started_at: float
    snap: FeedbackSnapshot
    keys: list[str]  # its rows' user ids, in snapshot order


@pytest.fixture
def client(
    tmp_path: Path, store_target: StoreAt, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    for name in list(os.environ):
        if name.upper().startswith("SPECREC_") or name.upper() in ("ADMIN_TOKEN", "PORT", "HOST"):
            monkeypatch.delenv(name)
    target = store_target("interactions")
    url = target if isinstance(target, str) else None
    with TestClient(create_app(Settings(home=tmp_path, admin_token=TOKEN, database_url=url))) as c:
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


def _snapshot(store: FeedbackStore) -> Snap:
    started = time.monotonic()
    snap = store.snapshot()
    return Snap(started, snap, [u for u, _, _ in snap.rows])


def _stored(store: FeedbackStore) -> list[StoredRow]:
    """Every (seq, user_id, item_id, timestamp), in seq order, read straight from the table."""
    with store.db.connect() as db:
        return [
            tuple(row)
            for row in db.execute(
                "SELECT seq, user_id, item_id, timestamp FROM interactions ORDER BY seq"
            )
        ]


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
        snaps.append(_snapshot(store))
    for w in writers:
        w.join()
    snaps.append(_snapshot(store))  # the next retrain's

    total = THREADS * BATCHES * ROWS
    accepted = [k for b in batches for k in b.keys]
    assert len(batches) == THREADS * BATCHES and len(set(accepted)) == total
    stored = _stored(store)
    seq = {u: q for q, u, _, _ in stored}
    assert len(seq) == store.count() == total and set(seq) == set(accepted)  # none lost
    by_seq = [u for _, u, _, _ in stored]
    mid = [s for s in snaps if 0 < len(s.keys) < total]
    assert mid, "no snapshot was taken while batches were still arriving"

    prev = FeedbackSnapshot([], 0)
    prev_keys: set[str] = set()
    for s in snaps:
        # a point-in-time prefix: exactly the store's rows up to its high-water mark, each
        # once, in seq order
        assert s.snap.rows == [(u, i, t) for q, u, i, t in stored if q <= s.snap.max_seq]
        assert s.keys == [k for k in by_seq if seq[k] <= s.snap.max_seq]
        assert len(set(s.keys)) == len(s.keys)
        # every row acknowledged before the snapshot began is in it
        present = set(s.keys)
        for b in batches:
            inside = [k in present for k in b.keys]
            assert all(inside) or not any(inside), "a batch split across snapshots"
            if b.acked_at < s.started_at:
                assert all(inside)
        # what the previous snapshot missed is what this one adds, after the previous mark
        assert s.snap.max_seq >= prev.max_seq and prev_keys <= present
        assert s.snap.rows[: len(prev.rows)] == prev.rows
        added = [k for k in s.keys if k not in prev_keys]
        assert added == [k for k in by_seq if prev.max_seq < seq[k] <= s.snap.max_seq]
        prev, prev_keys = s.snap, present
    final = snaps[-1]
    assert len(final.keys) == total and sorted(final.keys) == sorted(accepted)
    assert final.snap.max_seq == store.max_seq() and store.rows(after_seq=final.snap.max_seq) == []


def test_snapshot_is_one_read_transaction(
    store_target: StoreAt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch committed while the snapshot is being read (after its second row) belongs to
    the next snapshot, not this one: the store is read at one point in time."""
    store = FeedbackStore(store_target("fb"))
    store.append([Interaction(f"old_{i}", "item_0", float(i)) for i in range(5)])
    other = FeedbackStore(store.target)  # the API's connection, meanwhile
    real_rows_after = feedback_module._rows_after
    yielded: list[StoredRow] = []
    committed_after: list[int] = []  # rows the snapshot had read when the late batch committed
    totals: list[int] = []

    def commit_late_batch() -> None:
        writer = threading.Thread(
            target=lambda: totals.append(other.append([Interaction("late_0", "item_9", 9.0)])),
            daemon=True,
        )
        writer.start()
        writer.join(timeout=20)  # WAL: the writer commits although a read is open
        assert not writer.is_alive() and totals == [6], "the late batch did not commit"
        committed_after.append(len(yielded))

    def interleaved(db: Connection, after_seq: int) -> Iterator[StoredRow]:
        # counted over every call, and checked before each next row is fetched, so a snapshot
        # read in pages (a query per page) also meets the late batch between two of its reads
        inner = real_rows_after(db, after_seq)
        while True:
            if len(yielded) == 2 and not committed_after:
                commit_late_batch()
            row = next(inner, None)
            if row is None:
                return
            yielded.append(row)
            yield row

    monkeypatch.setattr(feedback_module, "_rows_after", interleaved)
    snap = store.snapshot()
    monkeypatch.undo()
    assert committed_after == [2]  # the batch committed in the middle of the read
    assert [r[0] for r in yielded] == [1, 2, 3, 4, 5]  # ...which then went on
    assert snap == FeedbackSnapshot([(f"old_{i}", "item_0", float(i)) for i in range(5)], 5)
    assert store.count() == 6  # the late batch did commit meanwhile
    assert store.rows(after_seq=snap.max_seq) == [("late_0", "item_9", 9.0)]
    nxt = store.snapshot()
    assert nxt.rows == snap.rows + [("late_0", "item_9", 9.0)] and nxt.max_seq == 6


def test_concurrent_appends_are_whole_and_counted(store_target: StoreAt) -> None:
    """FeedbackStore.append from several threads: every returned total is distinct, the last
    equals the row count, and no batch is interleaved with another in seq order."""
    store = FeedbackStore(store_target("fb"))
    totals: list[int] = []

    def worker(t: int) -> None:
        for b in range(20):
            rows = [Interaction(f"t{t}b{b}r{r}", "item_0", 1.0) for r in range(5)]
            totals.append(FeedbackStore(store.target).append(rows))

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
