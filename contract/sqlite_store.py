"""Connections for the small SQLite stores (job queue, ingested interactions).

WAL mode so readers never block the writer, FULL sync so a committed row survives a crash, a
generous busy timeout so the API and the worker can write the same file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path


def init_db(path: Path, schema: str) -> None:
    """Create the parent folder, switch the file to WAL and apply `schema` (idempotent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit connection with rows addressable by column name; closed on exit."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA synchronous=FULL")
    try:
        yield db
    finally:
        db.close()


@contextmanager
def _transaction(path: Path, begin: str) -> Iterator[sqlite3.Connection]:
    """`begin`, then COMMIT on success, ROLLBACK on error."""
    with connect(path) as db:
        db.execute(begin)
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def write_transaction(path: Path) -> AbstractContextManager[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock up front), COMMIT on success, ROLLBACK on error."""
    return _transaction(path, "BEGIN IMMEDIATE")


def read_transaction(path: Path) -> AbstractContextManager[sqlite3.Connection]:
    """BEGIN (deferred): every query inside reads the same committed state, fixed at the first
    read (a WAL snapshot), however many writers commit meanwhile; writers are never blocked."""
    return _transaction(path, "BEGIN")
